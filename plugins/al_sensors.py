"""The sensor that waits for a round's labelled file in the S3 inbox.

:class:`LabelFileSensor` is the Amazon provider's ``S3KeySensor`` in deferrable mode:
while it waits (hours or days: people label at their own pace) it holds no worker slot,
only a coroutine in the triggerer. Its key pattern is
``al_tasks.labelling.inbox.inbox_key_regex`` -- the same rule the ingest picks the file
by (``round-<n>.csv`` and what spreadsheets make of it on "save as"; never
``round-10.csv`` for round 1, never a file in a sub-folder).

Everything comes from the run's Params through template fields: bucket, key pattern,
timeout and poke interval (``sensor_timeout_seconds``, ``sensor_poke_seconds``). When
the timeout passes without a file, the sensor is *skipped* (not failed): the loop then
stops with the reason "labels stopped arriving". Errors talking to S3 still fail it.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
from al_common import S3_CONN_ID, config_from_params, round_from_params, s3_client


class LabelFileSensor(S3KeySensor):
    """Wait (deferred) for round ``n``'s labelled file in the inbox.

    Before deferring it looks in ``<processed>/<task>/``: when this round is re-run after
    its file was already ingested and moved there, there is nothing to wait for. Returns
    (XCom) ``{"key", "already_ingested"}`` or ``{"found": True}``; nothing when skipped.

    Parameters
    ----------
    timeout_seconds : templated, e.g. ``"{{ params.sensor_timeout_seconds }}"``
    poke_seconds : templated, e.g. ``"{{ params.sensor_poke_seconds }}"``
    """

    ui_color = "#fff7e0"
    template_fields = (*S3KeySensor.template_fields, "timeout_seconds", "poke_seconds")

    def __init__(
        self,
        *,
        timeout_seconds: str | float,
        poke_seconds: str | float,
        aws_conn_id: str | None = S3_CONN_ID,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("deferrable", True)
        kwargs.setdefault("mode", "poke")
        super().__init__(use_regex=True, aws_conn_id=aws_conn_id, **kwargs)
        self.timeout_seconds, self.poke_seconds = timeout_seconds, poke_seconds

    def render_template_fields(self, context, jinja_env=None) -> None:
        super().render_template_fields(context, jinja_env)
        # Rendered templates are text; the sensor machinery wants numbers.
        self.timeout, self.poke_interval = float(self.timeout_seconds), float(self.poke_seconds)

    def execute(self, context) -> dict | None:
        from al_tasks.labelling.inbox import already_ingested

        params = {key: context["params"][key] for key in context["params"]}
        done = already_ingested(s3_client(self.aws_conn_id), config_from_params(params), round_from_params(params))
        if done:
            self.log.info("this round's labelled file was already ingested (%s); nothing to wait for", done)
            return {"key": done, "already_ingested": True}
        if not self.poke(context):
            self.log.info(
                "waiting up to %.0f s for a key matching s3://%s/%s", self.timeout, self.bucket_name, self.bucket_key
            )
            self._defer()
        return {"found": True}

    def execute_complete(self, context, event: dict[str, Any]) -> dict:
        super().execute_complete(context, event)
        return {"found": True}

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context):
        try:
            return super().resume_execution(next_method, next_kwargs, context)
        except AirflowSensorTimeout as exc:
            # A timeout is the labellers' answer ("no more"), not a breakdown: skip, and
            # let next_round_decision end the loop with the reason.
            raise AirflowSkipException(f"no labelled file arrived before the timeout: {exc}") from exc
