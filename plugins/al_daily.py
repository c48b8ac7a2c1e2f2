"""Operators of the ``daily_ingest`` DAG: stage a day's landing files, then score them.

Airflow puts ``plugins/`` on ``sys.path``, so the DAG file imports this module as
``al_daily``. The work itself is :mod:`al_tasks.daily` (no Airflow there); these
operators only turn a DAG run into (LoopConfig, day, landing, alias) and log/return
the result, which becomes the task's XCom.

Which day a run processes
    ``params.date`` when given, else the run's logical date, else its
    ``data_interval_start``. The DAG's timetable is ``CronDataIntervalTimetable('@daily')``,
    so for scheduled and backfill runs all three agree: the run for day D has
    ``logical_date == data_interval_start == D 00:00 UTC`` and starts once D is over.
    A manual run with a logical date D (``dag.test(logical_date=D)``, the UI's trigger
    form) processes D too.

Settings
    ``LoopConfig.from_env()`` (``AL_*`` variables), overridden by the run's params of the
    same names when they are set (``workspace``, ``task``, ``corpus_path``,
    ``positive_class``, ``escalation_class``, ``escalation_probability``,
    ``review_uncertainty``). ``landing`` is a folder or an ``s3://bucket/prefix`` read
    through the Airflow connection ``al_s3`` (type aws: login/password = key/secret,
    extra ``endpoint_url`` for an S3-compatible store).
"""

from __future__ import annotations

import datetime as dt
import warnings
from typing import Any

from airflow.sdk import BaseOperator, Param
from airflow.sdk.exceptions import AirflowException

from al_tasks.config import LoopConfig

DEFAULT_AWS_CONN_ID = "al_s3"

#: The DAG's params: run-time knobs (UI trigger form, ``dag.test(run_conf=...)``, backfill ``--dag-run-conf``).
#: ``None`` means "keep the AL_* environment / LoopConfig default".
DAILY_PARAMS: dict[str, Param] = {
    "date": Param(None, type=["null", "string"], format="date",
                  description="Day to ingest (YYYY-MM-DD); empty: the run's logical date"),
    "landing": Param("", type="string",
                     description="Folder or s3://bucket/prefix of CFPB-format files; empty: <workspace>/landing"),
    "alias": Param("champion", type="string", description="Registry alias of the model that scores"),
    "workspace": Param(None, type=["null", "string"]),
    "task": Param(None, type=["null", "string"]),
    "corpus_path": Param(None, type=["null", "string"]),
    "positive_class": Param(None, type=["null", "string"]),
    "escalation_class": Param(None, type=["null", "string"]),
    "escalation_probability": Param(None, type=["null", "number"], minimum=0, maximum=1),
    "review_uncertainty": Param(None, type=["null", "number"], minimum=0, maximum=1),
}


def loop_config(context: dict[str, Any]) -> LoopConfig:
    """AL_* environment, then the run's non-empty params."""
    params = {k: v for k, v in dict(context.get("params") or {}).items() if v not in (None, "")}
    return LoopConfig.from_env().with_overrides(params)


def run_day(context: dict[str, Any]) -> dt.date:
    """The day a run processes (see the module docstring)."""
    from al_tasks.daily import parse_day

    explicit = (context.get("params") or {}).get("date")
    if explicit:
        return parse_day(explicit)
    moment = context.get("logical_date") or context.get("data_interval_start")
    if moment is None:
        raise AirflowException("this run has neither a logical date nor a data interval: set params.date")
    # Timetable in UTC, so the date of the UTC timestamp is the complaint day.
    return moment.in_timezone("UTC").date() if hasattr(moment, "in_timezone") else moment.date()


def _quiet_pyspark_pandas_warning() -> None:
    # PySpark warns on every pandas conversion that pandas 3 is newer than it knows;
    # it works, and the warning would drown the task log.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


class StageLandingOperator(BaseOperator):
    """Read and check one day's landing files into ``staged/date=<day>/`` (no Spark).

    :param landing: folder or ``s3://`` prefix (templated); empty: ``params.landing``,
        then ``<workspace>/landing``
    :param aws_conn_id: Airflow connection for an ``s3://`` landing location

    Returns (XCom) :func:`al_tasks.daily.stage_day`'s dict: date, landing, files,
    n_files, n_docs, n_rejected, staged.
    """

    template_fields = ("landing",)
    ui_color = "#e8f4fa"

    def __init__(self, *, landing: str = "", aws_conn_id: str = DEFAULT_AWS_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.landing = landing
        self.aws_conn_id = aws_conn_id

    def execute(self, context):
        from al_tasks.daily import default_landing, stage_day

        config = loop_config(context)
        day = run_day(context)
        landing = self.landing or (context.get("params") or {}).get("landing") or default_landing(config)
        s3_client = None
        if landing.startswith("s3://"):
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook

            s3_client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        return stage_day(config, day, landing=landing, s3_client=s3_client, log=self.log.info)


class ScoreDayOperator(BaseOperator):
    """Score, flag and pool the staged complaints of the run's day.

    Starts (and stops) its own SparkSession when it needs one. When no model is under
    the alias, the day still joins the pool, the log says in capitals that nothing was
    scored, and the XCom has ``scored: false`` and the same ``message``.

    :param alias: registry alias of the scoring model (templated); empty: ``params.alias``

    Returns (XCom) :func:`al_tasks.daily.score_day`'s summary dict.
    """

    template_fields = ("alias",)
    ui_color = "#fdf2e3"

    def __init__(self, *, alias: str = "", **kwargs):
        super().__init__(**kwargs)
        self.alias = alias

    def execute(self, context):
        from al_tasks.daily import score_day, stop_spark_if_started
        from al_tasks.tracking import disable_mlflow_telemetry

        _quiet_pyspark_pandas_warning()
        disable_mlflow_telemetry()
        config = loop_config(context)
        day = run_day(context)
        alias = self.alias or (context.get("params") or {}).get("alias") or "champion"
        with stop_spark_if_started():
            summary = score_day(config, day, alias=alias, log=self.log.info)
        if summary["n_docs"] and not summary["scored"]:
            self.log.warning(summary["message"])
        return summary
