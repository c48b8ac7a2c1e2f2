"""Operators of the ``daily_ingest`` DAG: stage a day's landing files, then score them.

The work itself is :mod:`al_tasks.scoring.daily` (no Airflow there); these operators
only turn a DAG run into (settings, day, landing, alias) and return the result as XCom.

Which day a run processes: Param ``date`` when given, else the run's logical date (for
the DAG's ``CronDataIntervalTimetable('@daily')`` the same as ``data_interval_start``:
the run for day D has ``logical_date == D 00:00 UTC`` and starts once D is over).
Settings: the run's Params (generated from ``LoopConfig``, see ``al_common``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from al_common import S3_CONN_ID, config_from_params, s3_client


def run_day(context: dict[str, Any]) -> dt.date:
    """The day a run processes (see the module docstring)."""
    from al_tasks.io.complaints import parse_day

    explicit = (context.get("params") or {}).get("date")
    if explicit:
        return parse_day(explicit)
    moment = context.get("logical_date") or context.get("data_interval_start")
    if moment is None:
        raise AirflowException("this run has neither a logical date nor a data interval: set params.date")
    # The timetable is in UTC, so the date of the UTC timestamp is the complaint day.
    return moment.in_timezone("UTC").date() if hasattr(moment, "in_timezone") else moment.date()


def _params(context) -> dict[str, Any]:
    return {key: context["params"][key] for key in context["params"]}


class StageLandingOperator(BaseOperator):
    """Read and check one day's landing files into ``staged/date=<day>/`` (no Spark)
    with :func:`al_tasks.scoring.daily.stage_day`.

    Parameters
    ----------
    landing : folder or ``s3://`` prefix (templated); empty: ``<workspace>/landing``
    aws_conn_id : Airflow connection for an ``s3://`` landing location
    """

    template_fields = ("landing",)
    ui_color = "#e8f4fa"

    def __init__(self, *, landing: str = "{{ params.landing }}", aws_conn_id: str = S3_CONN_ID, **kwargs):
        super().__init__(**kwargs)
        self.landing, self.aws_conn_id = landing, aws_conn_id

    def execute(self, context):
        from al_tasks.scoring.daily import stage_day

        client = s3_client(self.aws_conn_id) if str(self.landing).startswith("s3://") else None
        return stage_day(
            config_from_params(_params(context)), run_day(context), landing=self.landing or None, s3_client=client
        )


class ScoreDayOperator(BaseOperator):
    """Score, flag and pool the staged complaints of the run's day
    (:func:`al_tasks.scoring.daily.score_day`).

    Starts (and stops) its own SparkSession when it needs one. When no model is under
    the alias, the day still joins the pool and the XCom has ``scored: false`` and a
    ``message`` that says so in capitals (also logged as a warning).

    Parameters
    ----------
    alias : registry alias of the scoring model (templated)
    """

    template_fields = ("alias",)
    ui_color = "#fdf2e3"

    def __init__(self, *, alias: str = "{{ params.alias }}", **kwargs):
        super().__init__(**kwargs)
        self.alias = alias

    def execute(self, context):
        from al_tasks.scoring.daily import score_day
        from al_tasks.spark import stop_spark_if_started

        with stop_spark_if_started():
            summary = score_day(config_from_params(_params(context)), run_day(context), alias=self.alias or "champion")
        if summary["n_docs"] and not summary["scored"]:
            self.log.warning(summary["message"])
        return summary
