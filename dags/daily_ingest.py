"""daily_ingest: score each day's new complaints; escalate, review, or add to the pool.

One run per complaint day (``Date received``): ``stage_landing`` reads that day's CFPB
files from the landing folder (or S3 prefix), ``score_day`` scores them with the model
under the registry alias, writes ``<workspace>/<task>/scored/date=YYYY-MM-DD/`` and adds
every complaint not escalated to the active-learning pool. Re-running a day replaces
its outputs. Logic: ``al_tasks/scoring/daily.py``; operators: ``plugins/al_daily.py``.

Backfill (Airflow 3)::

    airflow backfill create --dag-id daily_ingest --from-date 2019-02-19 --to-date 2019-02-21 \\
        --reprocess-behavior completed
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable
from al_common import daily_params, spark_queue
from al_daily import ScoreDayOperator, StageLandingOperator

with DAG(
    dag_id="daily_ingest",
    description="Score each day's new complaints: escalation list, review list, pool",
    # Data intervals: the run for day D is [D, D+1) with logical date D and starts after D ends.
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2015, 1, 1, tz="UTC"),  # the shipped sample's first complaints
    catchup=False,  # history is loaded with an explicit backfill, not by enabling the DAG
    # Pool additions of different days must not race (each reads every other's ids).
    max_active_runs=1,
    params=daily_params(),
    default_args={"owner": "ml", "retries": 1, "retry_delay": pendulum.duration(minutes=2)},
    tags=["active-learning", "scoring"],
    doc_md=__doc__,
) as dag:
    stage = StageLandingOperator(task_id="stage_landing")
    score = ScoreDayOperator(task_id="score_day", queue=spark_queue())
    stage >> score
