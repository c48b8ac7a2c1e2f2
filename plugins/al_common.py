"""What the loop's DAGs, operators and sensors share: connection ids, Params, settings.

Airflow puts ``plugins/`` on ``sys.path``, so this module is imported as ``al_common``.

* Connection ids of the labelling bucket and the alert channels.
* :func:`loop_params`: the DAG Params, generated from :class:`al_tasks.config.LoopConfig`'s
  field metadata (title, description, bounds, choices, section), never re-typed.
* :func:`config_from_params` / :func:`round_from_params`: a run's Params to settings.
* :func:`s3_client`: the boto3 client of the ``al_s3`` connection, for ``al_tasks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param

from al_tasks.config import SECTIONS, LoopConfig, settings

#: The Airflow connection (type ``aws``) of the labelling bucket; its extra carries
#: ``endpoint_url`` for S3-compatible stores such as SeaweedFS.
S3_CONN_ID = "al_s3"
#: Alert channels (an undefined one is skipped).
WEBHOOK_CONN_ID = "al_alert_webhook"
SMTP_CONN_ID = "al_alert_smtp"

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def setting_param(info, default: object) -> Param:
    """The Param of one LoopConfig setting (its metadata as JSON-schema keywords)."""
    schema: dict[str, Any] = {"title": info.title, "description": info.description, "section": SECTIONS[info.section]}
    if info.kind in _JSON_TYPES:
        schema["type"] = _JSON_TYPES[info.kind]
    else:  # tuple[str, ...]
        schema.update(type="array", items={"type": "string"})
        default = list(default)  # type: ignore[call-overload]
    for key, value in (
        ("minimum", info.minimum),
        ("maximum", info.maximum),
        ("exclusiveMinimum", info.exclusive_minimum),
        ("pattern", info.pattern),
    ):
        if value is not None:
            schema[key] = value
    if info.choices:
        schema["enum"] = list(info.choices)
    return Param(default, **schema)


def setting_params(defaults: LoopConfig | None = None) -> dict[str, Param]:
    """Every LoopConfig setting as a Param.

    Form defaults are the effective settings where the DAG is parsed (defaults overridden
    by ``AL_*`` variables), so the trigger form shows what a run would use.
    """
    defaults = defaults or LoopConfig.from_env()
    return {info.name: setting_param(info, getattr(defaults, info.name)) for info in settings()}


def loop_params(defaults: LoopConfig | None = None) -> dict[str, Param]:
    """The loop DAG's Params: ``round``, ``loop_id`` and every setting."""
    params = {
        "round": Param(
            1,
            type="integer",
            minimum=1,
            title="Round",
            section="Run",
            description="The round this run works on. 1 starts a loop; the DAG triggers the next rounds itself.",
        ),
        "loop_id": Param(
            None,
            type=["null", "string"],
            title="Loop id",
            section="Run",
            description="Set by the DAG for rounds it triggers (the first round's run id); leave empty "
            "when starting a loop.",
        ),
    }
    params.update(setting_params(defaults))
    return params


def daily_params(defaults: LoopConfig | None = None) -> dict[str, Param]:
    """The daily ingest DAG's Params: ``date``, ``landing``, ``alias`` and every setting."""
    params = {
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day",
            section="Run",
            description="Day to ingest (YYYY-MM-DD); empty: the run's logical date.",
        ),
        "landing": Param(
            "",
            type="string",
            title="Landing",
            section="Run",
            description="Folder or s3://bucket/prefix of CFPB-format files; empty: <workspace>/landing.",
        ),
        "alias": Param(
            "champion",
            type="string",
            title="Model alias",
            section="Run",
            description="Registry alias of the model that scores.",
        ),
    }
    params.update(setting_params(defaults))
    return params


def config_from_params(params: Mapping[str, Any]) -> LoopConfig:
    """The run's settings: defaults < ``AL_*`` environment < Params / run conf (None keeps)."""
    return LoopConfig.from_env().with_overrides(dict(params))


def round_from_params(params: Mapping[str, Any]) -> int:
    """The round this run works on (Param ``round``, a whole number >= 1)."""
    raw = params.get("round", 1)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"Param round={raw!r}: must be a whole number >= 1") from None
    if number < 1 or float(raw) != number:
        raise ValueError(f"Param round={raw!r}: must be a whole number >= 1")
    return number


def spark_queue() -> str:
    """The queue of the Spark-heavy tasks (``AL_SPARK_QUEUE`` where the DAG is parsed):
    a team deployment sends them to workers that reach the Spark cluster.
    """
    return LoopConfig.from_env().spark_queue


def s3_client(aws_conn_id: str = S3_CONN_ID):
    """A boto3 S3 client from the Airflow connection ``aws_conn_id``."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id).get_conn()


def inbox_key_regex_of(params: Mapping[str, Any]) -> str:
    """The sensor's key pattern for this run (a template macro): round ``n``'s labelled file."""
    from al_tasks.labelling.inbox import inbox_key_regex

    config = config_from_params(params)
    return inbox_key_regex(round_from_params(params), config.task_prefix("inbox_prefix"))


def config_value(params: Mapping[str, Any], name: str) -> Any:
    """One effective setting of this run (a template macro)."""
    return getattr(config_from_params(params), name)


#: Macros for the loop DAG's templates (``user_defined_macros``).
MACROS = {
    "al_inbox_key_regex": inbox_key_regex_of,
    "al_setting": config_value,
    "al_task_prefix": lambda params, field: config_from_params(params).task_prefix(field),
}
