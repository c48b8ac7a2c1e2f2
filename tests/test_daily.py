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

from al_tasks.config import REPO_ROOT
from tests.fixtures_airflow import airflow_in_process  # noqa: F401
from tests.fixtures_s3 import seaweedfs  # noqa: F401
from tests.test_stream import BAD_ROWS, DAYS, POSITIVE, scoring_task  # noqa: F401

BACKFILL = DAYS[:3]
NO_MODEL_NAME = "al-debt-not-registered"
DAG_FILE = REPO_ROOT / "dags" / "daily_ingest.py"


def snapshot(config, day: str) -> dict:
    """What a day left behind: hashes of its outputs, its flagged ids, its pool rows."""
    from al_tasks.daily import parse_day, scored_dir
    from al_tasks.featurize import FeatureSet, fingerprint

    out = scored_dir(config, parse_day(day))
    pool_dir = FeatureSet.load(config.task_dir / "features" / fingerprint(config.corpus_path, config)).additions_root
    pool_docs = pool_dir / day / "docs.parquet"
    shot = {"files": sorted(p.name for p in out.iterdir()) if out.exists() else [],
            "pool_ids": sorted(pd.read_parquet(pool_docs)["id"].tolist()) if pool_docs.exists() else []}
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


@pytest.fixture(scope="module")
def dag(airflow_in_process):  # noqa: F811
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("daily_ingest")


@pytest.fixture(scope="module")
def conf(scoring_task) -> dict:  # noqa: F811
    """Run params: the task's settings and its landing folder."""
    config = scoring_task.config
    return {"landing": str(scoring_task.landing), "workspace": config.workspace, "task": config.task,
            "corpus_path": config.corpus_path, "positive_class": POSITIVE, "escalation_class": POSITIVE,
            # Not a declared param: run conf still reaches LoopConfig (dag_run_conf_overrides_params).
            "mlflow_tracking_uri": config.mlflow_tracking_uri}


def run_day(dag, config, day: str, conf: dict) -> dict:
    """``dag.test()`` for ``day``; its state, XComs (by task), snapshot and pool counts."""
    import pendulum
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from al_tasks.daily import pool_additions

    dag_run = dag.test(logical_date=pendulum.parse(day), run_conf=conf)
    with create_session() as session:
        xcoms = {x.task_id: x.value for x in session.scalars(select(XComModel).where(
            XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id, XComModel.key == "return_value"))}
    xcoms = {k: json.loads(v) if isinstance(v, str) else v for k, v in xcoms.items()}
    return {"day": day, "state": str(dag_run.state), "xcom": xcoms, "snapshot": snapshot(config, day),
            "pool": pool_additions(config)}


@pytest.fixture(scope="module")
def backfill(dag, conf, scoring_task, seaweedfs) -> dict:  # noqa: F811
    """Days 1-3 through the DAG, day 3 again from S3, days 1-3 again, then the CLI on day 2."""
    from al_tasks.daily import main as daily_cli

    config = scoring_task.config
    prefix = "daily-test/landing"
    for day in BACKFILL:
        seaweedfs.client().upload_file(str(scoring_task.landing / f"{day}.csv"), seaweedfs.bucket,
                                       f"{prefix}/{day}.csv")
    result = {"first": {day: run_day(dag, config, day, conf) for day in BACKFILL}}
    result["s3"] = run_day(dag, config, BACKFILL[2], {**conf, "landing": f"s3://{seaweedfs.bucket}/{prefix}"})
    result["repeat"] = {day: run_day(dag, config, day, conf) for day in BACKFILL}
    # The plain CLI (day 2, the one with bad rows): the same function, the same outputs.
    assert daily_cli(["--date", BACKFILL[1], "--to", BACKFILL[1], "--landing", conf["landing"],
                      "--workspace", config.workspace, "--task", config.task, "--corpus", config.corpus_path,
                      "--set", f"positive_class={POSITIVE}",
                      "--set", f"mlflow_tracking_uri={config.mlflow_tracking_uri}",
                      "--escalation-class", POSITIVE]) == 0
    result["cli"] = {BACKFILL[1]: snapshot(config, BACKFILL[1])}
    from al_tasks.daily import pool_additions

    result["cli_pool"] = pool_additions(config)
    return result


# --- tests --------------------------------------------------------------------------------------
def test_without_a_model_the_day_is_pooled_and_nothing_is_scored(dag, conf, scoring_task, capfd):  # noqa: F811
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
    assert backfill["cli"][BACKFILL[1]] == first[BACKFILL[1]]["snapshot"]
    assert backfill["cli_pool"] == first[BACKFILL[-1]]["pool"]


# --- reading landing files (no Spark, no Airflow) ---------------------------------------------------
def test_landing_files_of_a_day(tmp_path):
    import datetime as dt

    from al_tasks.daily import landing_files

    names = ["2019-02-19.csv", "2019-02-19-part2.csv.gz", ".2019-02-19.csv.tmp", "2019-02-19/a.jsonl",
             "date=2019-02-19/b.csv", "date=2019-02-19/_SUCCESS.csv", "2019-02-190.csv", "2019-02-20.csv",
             "2019-02-19/notes.txt"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [name for name, _ in landing_files(str(tmp_path), dt.date(2019, 2, 19))]
    assert found == ["2019-02-19-part2.csv.gz", "2019-02-19.csv", "2019-02-19/a.jsonl", "date=2019-02-19/b.csv"]


def test_stage_day_keeps_every_bad_row_with_its_reason(tmp_path):
    from al_tasks.config import LoopConfig
    from al_tasks.daily import read_complaint_file, stage_day

    config = LoopConfig(workspace=str(tmp_path / "ws"), task="t")
    landing = tmp_path / "landing"
    landing.mkdir()
    header = "Date received,Product,Consumer complaint narrative,Complaint ID\n"
    (landing / "2019-02-19.csv").write_bytes((
        header
        + '2019-02-19,Debt collection,"A collector called me\nthree times a day.",101\n'
        + '02/19/2019,Mortgage,"My escrow went up.",102\n'       # the older MM/DD/YYYY export format
        + ',Mortgage,"No date: taken as the run date.",103\n'
        + '2019-02-20,Mortgage,"Wrong day.",104\n'
        + 'someday,Mortgage,"Not a date.",105\n'
        + '2019-02-19,Mortgage,"",106\n'
        + '2019-02-19,Mortgage,"Second copy.",101\n'
        + '2019-02-19,Mortgage,"Bad id.",10x\n').encode()
        + b'2019-02-19,Mortgage,"Caf\xe9.",107\n')
    (landing / "2019-02-19_api.jsonl").write_bytes(
        b'{"complaint_id": "201", "date_received": "2019-02-19", "complaint_what_happened": "From the API."}\n'
        b'{"complaint_id": "101", "date_received": "2019-02-19", "complaint_what_happened": "Also in the CSV."}\n'
        b'not json\n'
        b'\n'
        b'{"complaint_id": "202", "complaint_what_happened": "Caf\xe9"}\n')
    staged = stage_day(config, "2019-02-19", landing=str(landing), log=lambda *_: None)
    docs = pd.read_parquet(tmp_path / "ws" / "t" / "staged" / "date=2019-02-19" / "docs.parquet")
    rejects = pd.read_csv(tmp_path / "ws" / "t" / "staged" / "date=2019-02-19" / "rejects.csv", dtype=str,
                          keep_default_na=False)
    assert sorted(docs["id"]) == [101, 102, 103, 201]
    assert docs.set_index("id").loc[101, "text"] == "A collector called me\nthree times a day."
    by_id = dict(zip(rejects["id"], rejects["reason"]))
    assert by_id["104"] == "Date received 2019-02-20 is not the run date 2019-02-19"
    assert by_id["105"] == "Date received is not a date"
    assert by_id["106"] == "empty narrative"
    assert by_id["10x"] == "id is not a whole number"
    assert by_id["107"] == "narrative has bytes that are not UTF-8"
    reasons = sorted(rejects["reason"])
    assert reasons.count("duplicate id (first occurrence kept)") == 2  # in the CSV, and across files
    assert any(r.startswith("not valid JSON") for r in reasons)
    assert "line has bytes that are not UTF-8" in reasons
    assert staged["n_docs"] == 4 and staged["n_rejected"] == len(rejects) == 9
    # JSON rejects carry the file's own line numbers.
    _, json_rejects = read_complaint_file(landing / "2019-02-19_api.jsonl", config)
    reasons_by_line = dict(zip(json_rejects["line"], json_rejects["reason"].str[:14]))
    assert reasons_by_line == {3: "not valid JSON", 5: "line has bytes"}
