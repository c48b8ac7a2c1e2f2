"""The daily_ingest DAG through ``dag.test()``: no model yet, a 3-day backfill run twice,
an S3 landing location, and the plain CLI, all on real complaints, Spark, MLflow and Airflow.

Airflow runs in this process (``tests.fixtures_airflow.airflow_in_process``: a throw-away
AIRFLOW_HOME with a migrated SQLite DB, the repository's ``dags/`` and ``plugins/``, and
the ``al_s3`` connection to a real SeaweedFS), so the DAG's tasks share the test
session's SparkSession. The task's settings reach the DAG as run params, as a user
triggering a run would give them.
"""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from tests.fixtures.airflow import load_dag
from tests.fixtures.scoring import BAD_ROWS, DAYS, POSITIVE

BACKFILL = DAYS[:3]
NO_MODEL_NAME = "al-debt-not-registered"


def snapshot(config, day: str) -> dict:
    """What a day left behind: hashes of its outputs, its flagged ids, its pool rows."""
    from al_tasks.io.complaints import parse_day
    from al_tasks.ml.features import current_feature_set
    from al_tasks.workspace import TaskWorkspace

    out = TaskWorkspace(config).scored_dir(parse_day(day))
    pool_dir = current_feature_set(config).additions_root
    pool_docs = pool_dir / day / "docs.parquet"
    shot = {
        "files": sorted(p.name for p in out.iterdir()) if out.exists() else [],
        "pool_ids": sorted(pd.read_parquet(pool_docs)["id"].tolist()) if pool_docs.exists() else [],
    }
    for name in ("escalate.csv", "review.csv", "rejects.csv"):
        if (out / name).exists():
            shot[name] = hashlib.sha256((out / name).read_bytes()).hexdigest()
    if (out / "scored.parquet").exists():
        scored = pd.read_parquet(out / "scored.parquet").sort_values("id")
        shot["scored_sha256"] = hashlib.sha256(scored.to_csv(index=False).encode()).hexdigest()
        shot["ids"] = scored["id"].tolist()
        shot["escalate_ids"] = scored.loc[scored["escalate"], "id"].tolist()
        shot["review_ids"] = scored.loc[scored["review"], "id"].tolist()
        shot["p_escalation"] = scored["p_escalation"].round(12).tolist()
    if (out / "rejects.csv").exists():
        shot["reject_reasons"] = sorted(pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)["reason"])
    if (out / "summary.json").exists():
        shot["summary"] = {k: v for k, v in json.loads((out / "summary.json").read_text()).items() if k != "seconds"}
    return shot


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def _no_spark_left_running():
    """Stop, when this module ends, a SparkSession its tests started (the DAG's tasks
    reuse the test process's session instead of starting one per task)."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    yield
    session = SparkSession.getActiveSession()
    if before is None and session is not None:
        session.stop()


@pytest.fixture
def dag(airflow_in_process):
    """The DAG freshly parsed for each test: a run's conf must not leak into the next test."""
    return load_dag("daily_ingest", "daily_ingest.py")


@pytest.fixture(scope="module")
def conf(scoring_task) -> dict:
    """Run params: the task's settings and its landing folder."""
    config = scoring_task.config
    return {
        "landing": str(scoring_task.landing),
        "workspace": config.workspace,
        "task": config.task,
        "corpus_path": config.corpus_path,
        "positive_class": POSITIVE,
        "escalation_class": POSITIVE,
        "mlflow_tracking_uri": config.mlflow_tracking_uri,
    }


def run_day(dag, config, day: str, conf: dict) -> dict:
    """``dag.test()`` for ``day``; its state, XComs (by task), snapshot and pool counts."""
    import pendulum
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from al_tasks.scoring.daily import pool_additions

    dag_run = dag.test(logical_date=pendulum.parse(day), run_conf=conf)
    with create_session() as session:
        xcoms = {
            x.task_id: x.value
            for x in session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"
                )
            )
        }
    xcoms = {k: json.loads(v) if isinstance(v, str) else v for k, v in xcoms.items()}
    return {
        "day": day,
        "state": str(dag_run.state),
        "xcom": xcoms,
        "snapshot": snapshot(config, day),
        "pool": pool_additions(config),
    }


@pytest.fixture(scope="module")
def backfill(airflow_in_process, conf, scoring_task, seaweedfs) -> dict:
    """Days 1-3 through the DAG, day 3 again from S3, days 1-3 again, then the CLI on day 2.

    Returns every run's state, XComs and outputs; asserts nothing itself.
    """
    from al_tasks.cli import main as al
    from al_tasks.scoring.daily import pool_additions

    config = scoring_task.config
    prefix = "daily-test/landing"
    for day in BACKFILL:
        seaweedfs.client().upload_file(
            str(scoring_task.landing / f"{day}.csv"), seaweedfs.bucket, f"{prefix}/{day}.csv"
        )
    dag = load_dag("daily_ingest", "daily_ingest.py")
    result = {"first": {day: run_day(dag, config, day, conf) for day in BACKFILL}}
    result["s3"] = run_day(dag, config, BACKFILL[2], {**conf, "landing": f"s3://{seaweedfs.bucket}/{prefix}"})
    result["repeat"] = {day: run_day(dag, config, day, conf) for day in BACKFILL}
    # The plain CLI (day 2, the one with bad rows): the same function, the same outputs.
    result["cli_exit"] = al(
        [
            "daily",
            "--date",
            BACKFILL[1],
            "--to",
            BACKFILL[1],
            "--landing",
            conf["landing"],
            "--workspace",
            config.workspace,
            "--task",
            config.task,
            "--corpus",
            config.corpus_path,
            "--positive-class",
            POSITIVE,
            "--mlflow-tracking-uri",
            config.mlflow_tracking_uri,
            "--escalation-class",
            POSITIVE,
        ]
    )
    result["cli"] = {BACKFILL[1]: snapshot(config, BACKFILL[1])}
    result["cli_pool"] = pool_additions(config)
    return result


# --- tests --------------------------------------------------------------------------------------
def test_without_a_model_the_day_is_pooled_and_nothing_is_scored(dag, conf, scoring_task, capfd):
    run = run_day(dag, scoring_task.config, BACKFILL[0], {**conf, "registered_model_name": NO_MODEL_NAME})
    assert run["state"] == "success"
    summary = run["xcom"]["score_day"]
    assert summary["scored"] is False and summary["model_version"] is None
    assert "NOTHING WAS SCORED" in summary["message"] and NO_MODEL_NAME in summary["message"]
    assert "NOTHING WAS SCORED" in capfd.readouterr().out  # the task log says so too
    assert summary["n_docs"] == run["xcom"]["stage_landing"]["n_docs"] > 0
    assert summary["n_pool_added"] == summary["n_docs"]  # everything joins the pool unscored
    assert run["snapshot"]["files"] == ["rejects.csv", "summary.json"]  # no lists: nothing was scored
    assert run["pool"][BACKFILL[0]] == summary["n_docs"]


def test_backfill_scores_flags_and_pools_each_day(backfill):
    first = backfill["first"]
    assert list(first) == list(BACKFILL)
    for day, run in first.items():
        assert run["state"] == "success"
        summary, shot = run["xcom"]["score_day"], run["snapshot"]
        assert summary["scored"] is True and summary["date"] == day
        assert summary["n_scored"] == summary["n_docs"] == len(shot["ids"]) > 10
        assert summary["n_escalated"] == len(shot["escalate_ids"]) and summary["n_review"] == len(shot["review_ids"])
        # Every row not escalated joins the pool, under the day's key; escalated ones do not.
        assert sorted(shot["pool_ids"]) == sorted(set(shot["ids"]) - set(shot["escalate_ids"]))
        assert shot["files"] == ["escalate.csv", "rejects.csv", "review.csv", "scored.parquet", "summary.json"]
    # Re-running day 1 with a model replaced the unscored no-model outputs and pool rows.
    day1 = first[BACKFILL[0]]["xcom"]["score_day"]
    assert first[BACKFILL[0]]["pool"][BACKFILL[0]] == day1["n_docs"] - day1["n_escalated"] - day1["n_pool_rejected"]
    assert sum(r["xcom"]["score_day"]["n_escalated"] for r in first.values()) > 0
    assert sum(r["xcom"]["score_day"]["n_review"] for r in first.values()) > 0
    # The bad rows appended to day 2 are rejected with their reasons.
    assert sorted(first[BACKFILL[1]]["snapshot"]["reject_reasons"]) == sorted(r for _, _, r in BAD_ROWS)
    assert first[BACKFILL[1]]["xcom"]["stage_landing"]["n_rejected"] == len(BAD_ROWS)


def test_repeated_backfill_gives_the_same_outputs_and_pool(backfill):
    first, repeat = backfill["first"], backfill["repeat"]
    for day in BACKFILL:
        assert repeat[day]["state"] == "success"
        assert repeat[day]["snapshot"] == first[day]["snapshot"], day
    final_pool = repeat[BACKFILL[-1]]["pool"]
    assert final_pool == first[BACKFILL[-1]]["pool"]  # no pool row counted twice
    assert sum(final_pool.values()) == sum(len(first[d]["snapshot"]["pool_ids"]) for d in BACKFILL)


def test_s3_landing_gives_the_same_flags(backfill):
    s3_run, local = backfill["s3"], backfill["first"][BACKFILL[2]]["snapshot"]
    assert s3_run["state"] == "success"
    assert s3_run["xcom"]["stage_landing"]["files"][0].startswith("s3://")
    shot = s3_run["snapshot"]
    for key in ("ids", "escalate_ids", "review_ids", "p_escalation", "pool_ids"):
        assert shot[key] == local[key], key


def test_cli_gives_the_same_outputs_as_the_dag(backfill):
    first = backfill["first"]
    assert backfill["cli_exit"] == 0
    assert backfill["cli"][BACKFILL[1]] == first[BACKFILL[1]]["snapshot"]
    assert backfill["cli_pool"] == first[BACKFILL[-1]]["pool"]
