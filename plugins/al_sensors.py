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
stops with the reason "labels stopped arriving".

Outages while it waits: the wait runs in :class:`LabelFileTrigger`, which treats an S3
error that may pass (server unreachable, connection reset, timeout, 5xx, "slow down";
``al_tasks.io.s3.is_transient_error``) as "not there yet": it logs it, backs off
(doubling from the poke interval to at most 5 minutes) and keeps waiting, for as long
as the sensor's timeout. Errors a retry cannot fix (credentials, no such bucket) end the
wait and fail the task. The few S3 calls on the worker before deferring are covered by
the task's retries (with exponential back-off, set in the DAG). A killed triggerer is
no loss either: the trigger is a row in the metadata DB, and a restarted (or another)
triggerer runs it again from the start.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.amazon.aws.triggers.s3 import S3KeyTrigger
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException
from airflow.triggers.base import TriggerEvent
from al_common import S3_CONN_ID, config_from_params, round_from_params, s3_client

#: Longest pause between two looks at the inbox while S3 is unreachable.
MAX_BACKOFF_SECONDS = 300.0


class LabelFileTrigger(S3KeyTrigger):
    """The wait for a key matching ``bucket_key`` (a regex), through S3 outages.

    Lists only the keys under the pattern's fixed prefix (the task's inbox), not the
    whole bucket. See the module docstring for which errors are waited through.
    """

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def _found(self, client) -> bool:
        from al_tasks.labelling.inbox import regex_literal_prefix

        prefix = regex_literal_prefix(self.bucket_key)
        async for obj in self.hook.get_file_metadata_async(client, self.bucket_name, prefix):
            if re.match(self.bucket_key, obj["Key"]):
                return True
        return False

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from al_tasks.io.s3 import is_transient_error

        failures = 0
        while True:
            try:
                async with await self.hook.get_async_conn() as client:
                    while not await self._found(client):
                        failures = 0
                        await asyncio.sleep(self.poke_interval)
                yield TriggerEvent({"status": "success"})
                return
            except Exception as exc:
                if not is_transient_error(exc):
                    yield TriggerEvent({"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                    return
                failures += 1
                pause = min(MAX_BACKOFF_SECONDS, float(self.poke_interval) * 2 ** min(failures - 1, 10))
                self.log.warning(
                    "S3 is unreachable (%s: %s; %d time(s) in a row); still waiting, next look in %.0f s",
                    type(exc).__name__,
                    exc,
                    failures,
                    pause,
                )
                await asyncio.sleep(pause)


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

    def _defer(self) -> None:
        self.defer(
            timeout=timedelta(seconds=self.timeout),
            trigger=LabelFileTrigger(
                bucket_name=self.bucket_name,
                bucket_key=self.bucket_key,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                verify=self.verify,
                botocore_config=self.botocore_config,
                poke_interval=self.poke_interval,
                use_regex=True,
            ),
            method_name="execute_complete",
        )

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
