"""The sensor that waits for a round's labelled file in the S3 inbox.

:class:`LabelFileSensor` is the Amazon provider's ``S3KeySensor`` in deferrable mode:
while it waits (hours or days: people label at their own pace) it holds no worker
slot, only a coroutine in the triggerer. It watches
``s3://<bucket>/<inbox_prefix>/<task>/`` for any name
``al_tasks.labelling.inbox_key_glob(n)`` matches (``round-<n>.csv`` and what
spreadsheets make of it on "save as": ``Round-1 (1).CSV``, ``round-1_labelled.csv``,
...; never ``round-10.csv`` for round 1).

Everything comes from the run's Params: bucket, inbox prefix, task, round,
``sensor_timeout_seconds`` and ``sensor_poke_seconds``. When the timeout passes
without a file, the sensor is *skipped* (not failed): the loop then stops with the
reason "labels stopped arriving". Errors talking to S3 still fail it.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from al_operators import DEFAULT_S3_CONN_ID, loop_config, round_number, s3_uri, task_prefix


class LabelFileSensor(S3KeySensor):
    """Wait (deferred) for round ``n``'s labelled file in the inbox.

    Before deferring it also looks in ``processed/<task>/``: when this round is re-run
    after its file was already ingested and moved there, there is nothing to wait for.
    """

    ui_color = "#fff7e0"

    def __init__(self, *, aws_conn_id: str | None = DEFAULT_S3_CONN_ID, **kwargs: Any) -> None:
        kwargs.setdefault("deferrable", True)
        kwargs.setdefault("mode", "poke")
        # The real key and bucket are set from the run's Params in execute().
        super().__init__(bucket_key="", wildcard_match=True, aws_conn_id=aws_conn_id, **kwargs)

    def configure(self, context) -> None:
        """Bucket, key pattern, timeout and poke interval of this run."""
        from al_tasks.labelling import inbox_key_glob

        params = {key: context["params"][key] for key in context["params"]}
        config = loop_config(params)
        number = round_number(params)
        self.bucket_name = config.bucket
        self.bucket_key = inbox_key_glob(number, task_prefix(config.inbox_prefix, config.task))
        self.timeout = float(config.sensor_timeout_seconds)
        self.poke_interval = float(config.sensor_poke_seconds)
        self._processed_prefix = task_prefix(config.processed_prefix, config.task)
        self._round = number

    def execute(self, context) -> None:
        from al_tasks.labelling import matching_inbox_keys

        self.configure(context)
        done = matching_inbox_keys(self.hook.list_keys(self.bucket_name, prefix=self._processed_prefix), self._round)
        if done:
            self.log.info("round %s's labelled file was already ingested (%s); nothing to wait for",
                          self._round, s3_uri(self.bucket_name, done[0]))
            return
        self.log.info("waiting up to %.0f s (checking every %.0f s) for s3://%s/%s", self.timeout,
                      self.poke_interval, self.bucket_name, self.bucket_key)
        super().execute(context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context):
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as exc:
            # A timeout is the labellers' answer ("no more"), not a breakdown: skip, and
            # let next_round_decision end the loop with the reason.
            raise AirflowSkipException(f"no labelled file arrived before the timeout: {exc}") from exc
