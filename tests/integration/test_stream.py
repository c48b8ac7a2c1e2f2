"""The streaming scorer on real CFPB complaints, real Spark and a real MLflow registry
(the task: ``tests.fixtures.scoring``)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.scoring import BAD_ROWS, DAYS, POSITIVE, TaskSetup, live_spark, train_and_promote


def drop(src: Path, source_dir: Path, name: str | None = None) -> Path:
    """Copy ``src`` into the watched folder atomically (hidden temp name, then rename)."""
    source_dir.mkdir(parents=True, exist_ok=True)
    target = source_dir / (name or src.name)
    tmp = source_dir / f".{target.name}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, target)
    return target


def expected_flags(setup: TaskSetup, files: list[Path], spark, version: str) -> pd.DataFrame:
    """flag() computed directly (no streaming) on the complaints of ``files``."""
    from al_tasks.io.complaints import read_complaint_file
    from al_tasks.ml.features import transform_texts
    from al_tasks.ml.flag import flag
    from al_tasks.tracking import load_model_version

    model = load_model_version(setup.config, version)
    docs = pd.concat([read_complaint_file(f, setup.config)[0] for f in files], ignore_index=True)
    ids, X = transform_texts(setup.feature_set.pipeline_path, docs[["id", "text"]], spark=spark)
    return flag(model, X, ids, setup.config).sort_values("id").reset_index(drop=True)


@pytest.fixture(scope="module")
def spark():
    """A live SparkSession for this module; stopped at the end if this fixture started it."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    session = live_spark()
    yield session
    if before is None:
        session.stop()


@pytest.fixture(scope="module")
def task(scoring_task) -> TaskSetup:
    return scoring_task


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stream_io")
    return {"source": base / "source", "output": base / "output", "checkpoint": base / "checkpoint"}


def run_available_now(task: TaskSetup, dirs, spark) -> dict:
    from al_tasks.scoring.stream import run_stream

    return run_stream(task.config, dirs["source"], dirs["output"], dirs["checkpoint"], available_now=True, spark=spark)


# --- tests --------------------------------------------------------------------------------------
def test_stream_flags_new_files_once_across_restarts(task, dirs, spark):
    from al_tasks.scoring.stream import read_outputs

    # Plain CSV, gzipped CSV and JSON lines are all read.
    gzipped = dirs["source"].parent / f"{DAYS[0]}.csv.gz"
    gzipped.write_bytes(gzip.compress((task.landing / f"{DAYS[0]}.csv").read_bytes()))
    first = [drop(gzipped, dirs["source"]), drop(task.landing / f"{DAYS[1]}.csv", dirs["source"])]
    # JSON lines with the CFPB API's field names.
    jsonl = dirs["source"].parent / "2019-02-21.jsonl"
    rows = pd.read_csv(task.landing / f"{DAYS[2]}.csv", dtype=str, keep_default_na=False)
    with open(jsonl, "w", encoding="utf-8") as fh:
        for _, row in rows.iterrows():
            fh.write(
                json.dumps(
                    {
                        "complaint_id": row["Complaint ID"],
                        "date_received": row["Date received"],
                        "complaint_what_happened": row["Consumer complaint narrative"],
                    }
                )
                + "\n"
            )
    first.append(drop(jsonl, dirs["source"]))

    result = run_available_now(task, dirs, spark)
    scored = read_outputs(dirs["output"], "scored")
    want = expected_flags(task, first, spark, task.model_version)
    assert result["n_docs"] == len(want) == len(scored) > 60
    assert not scored["id"].duplicated().any()
    got = scored.sort_values("id").reset_index(drop=True)
    assert got["id"].tolist() == want["id"].tolist()
    np.testing.assert_allclose(got["p_escalation"], want["p_escalation"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(got["uncertainty"], want["uncertainty"], rtol=0, atol=1e-9)
    assert got["escalate"].tolist() == want["escalate"].tolist()
    assert got["review"].tolist() == want["review"].tolist()
    assert (got["predicted_label"] == want["predicted_label"]).all()
    assert set(got["model_version"]) == {task.model_version}
    # Both lists are non-trivial on these days, and match the flags row for row.
    escalate, review = read_outputs(dirs["output"], "escalate"), read_outputs(dirs["output"], "review")
    assert 0 < len(escalate) < len(got) and 0 < len(review) < len(got)
    assert set(escalate["id"]) == set(got.loc[got["escalate"], "id"])
    assert set(review["id"]) == set(got.loc[got["review"], "id"])
    people = pd.concat(
        [
            pd.read_csv(p, dtype={"id": "int64"}, encoding="utf-8-sig")
            for p in sorted((dirs["output"] / "csv" / "escalate").glob("batch-*.csv"))
        ]
    )
    assert sorted(people["id"]) == sorted(escalate["id"])
    # The bad rows are rejected with their reasons, not scored.
    rejects = pd.concat(
        [
            pd.read_csv(p, dtype=str, keep_default_na=False)
            for p in sorted((dirs["output"] / "csv" / "rejects").glob("batch-*.csv"))
        ]
    )
    assert sorted(rejects["reason"]) == sorted(reason for _, _, reason in BAD_ROWS)

    # Restart on the same checkpoint with one new file: only it is read.
    before = len(scored)
    new = drop(task.landing / f"{DAYS[3]}.csv", dirs["source"])
    again = run_available_now(task, dirs, spark)
    scored = read_outputs(dirs["output"], "scored")
    assert again["n_docs"] == len(expected_flags(task, [new], spark, task.model_version))
    assert len(scored) == before + again["n_docs"]
    assert not scored["id"].duplicated().any()
    # Every file was taken by exactly one batch.
    batches = [json.loads(p.read_text()) for p in sorted((dirs["output"] / "batches").glob("batch-*.json"))]
    taken = [Path(f.replace("file:", "")).name for b in batches for f in b["files"]]
    assert sorted(taken) == sorted(p.name for p in [*first, new])
    # Nothing new: nothing read.
    assert run_available_now(task, dirs, spark)["batches"] == 0
    assert len(read_outputs(dirs["output"], "scored")) == len(scored)


def test_promoted_model_is_picked_up_between_runs(task, dirs, spark):
    from al_tasks.scoring.stream import read_outputs

    old = read_outputs(dirs["output"], "scored")
    v2 = train_and_promote(task.config, 2, task.feature_set)
    assert v2 != task.model_version
    new = drop(task.landing / f"{DAYS[4]}.csv", dirs["source"])
    result = run_available_now(task, dirs, spark)
    scored = read_outputs(dirs["output"], "scored")
    fresh = scored[~scored["id"].isin(old["id"])]
    assert result["model_versions"] == [v2]
    assert set(fresh["model_version"]) == {v2} and len(fresh) == result["n_docs"] > 0
    assert set(scored.loc[scored["id"].isin(old["id"]), "model_version"]) == {task.model_version}
    want = expected_flags(task, [new], spark, v2)
    assert fresh.sort_values("id")["escalate"].tolist() == want["escalate"].tolist()


def test_running_service_follows_the_alias(task, dirs, spark):
    """processingTime trigger: a promotion while the query runs is used from the next batch."""
    from al_tasks.scoring.stream import read_outputs, start_stream, stop_gracefully
    from al_tasks.tracking import client

    batches_dir = dirs["output"] / "batches"
    seen = set(batches_dir.glob("*.json"))
    query, scorer = start_stream(
        task.config, dirs["source"], dirs["output"], dirs["checkpoint"], processing_time="1 second", spark=spark
    )
    try:
        current = scorer.model_version
        drop(task.landing / f"{DAYS[5]}.csv", dirs["source"])
        _wait_for(lambda: len(set(batches_dir.glob("*.json")) - seen) >= 1, query)
        # Roll the alias back to version 1 while the query runs, then drop another file.
        client(task.config).set_registered_model_alias(task.config.model_name, "champion", task.model_version)
        replay = dirs["source"].parent / "replay.csv"
        rows = pd.read_csv(task.landing / f"{DAYS[0]}.csv", dtype=str, keep_default_na=False)
        rows["Complaint ID"] = (rows["Complaint ID"].astype("int64") + 10**9).astype(str)  # new ids, same texts
        rows.to_csv(replay, index=False)
        drop(replay, dirs["source"])
        _wait_for(lambda: len(set(batches_dir.glob("*.json")) - seen) >= 2, query)
    finally:
        stop_gracefully(query, grace_seconds=30)
    assert not query.isActive
    scored = read_outputs(dirs["output"], "scored")
    assert not scored["id"].duplicated().any()
    versions = scored.groupby("batch_id")["model_version"].unique()
    assert all(len(v) == 1 for v in versions)  # one version per batch
    last_two = [v[0] for v in versions.iloc[-2:]]
    assert last_two == [current, task.model_version]


def _wait_for(condition, query, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if query.exception() is not None:
            raise AssertionError(f"streaming query failed: {query.exception()}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the streaming query")
        time.sleep(0.3)


def test_impossible_thresholds_are_refused(task, tmp_path, spark):
    from al_tasks.scoring.stream import start_stream

    # A binary model's uncertainty is at most 0.5.
    config = task.config.with_overrides({"review_uncertainty": 0.6})
    with pytest.raises(ValueError, match="can never be reached"):
        start_stream(config, tmp_path / "s", tmp_path / "o", tmp_path / "c", available_now=True, spark=spark)
    assert not spark.streams.active  # refused before a query started


def test_cli_service_stops_cleanly_on_sigterm(task, tmp_path, spark, capsys):
    """``al stream`` as a service (the CLI's ``main``, in this process so the Spark JVM is
    shared): scores a dropped file, then SIGTERM stops it cleanly, exit 0."""
    from al_tasks.cli import main

    source, output = tmp_path / "source", tmp_path / "output"
    argv = [
        "stream",
        "--json",
        "--source",
        str(source),
        "--output",
        str(output),
        "--checkpoint",
        str(tmp_path / "checkpoint"),
        "--processing-time",
        "1 second",
        "--workspace",
        task.config.workspace,
        "--task",
        task.config.task,
        "--corpus",
        task.config.corpus_path,
        "--set",
        f"positive_class={POSITIVE}",
        "--set",
        f"mlflow_tracking_uri={task.config.mlflow_tracking_uri}",
        "--set",
        f"lsa_components={task.config.lsa_components}",
        "--escalation-class",
        POSITIVE,
        "--review-uncertainty",
        "0.45",
    ]
    failures = []
    previous_handler = signal.getsignal(signal.SIGTERM)

    def operator() -> None:
        """What an operator or a process manager does: drop a file, wait, send SIGTERM."""
        try:
            deadline = time.monotonic() + 120
            while not source.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            drop(task.landing / f"{DAYS[0]}.csv", source)
            while not list((output / "batches").glob("*.json")) and time.monotonic() < deadline:
                time.sleep(0.2)
        except Exception as exc:  # reported below, after the service stopped
            failures.append(exc)
        finally:
            # Only once the service's handler is in place (else SIGTERM would end pytest).
            deadline = time.monotonic() + 120
            while signal.getsignal(signal.SIGTERM) is previous_handler and time.monotonic() < deadline:
                time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)  # the handler turns it into a graceful stop

    helper = threading.Thread(target=operator, daemon=True)
    helper.start()
    assert main(argv) == 0
    helper.join(timeout=10)
    assert not failures, failures
    printed = capsys.readouterr()
    assert "stop requested" in printed.err and "stream: stopped" in printed.err
    summary = json.loads(printed.out)
    assert summary["stopped_by"] == "signal" and summary["n_docs"] > 0
    scored = pd.read_parquet(output / "parquet" / "scored")
    assert len(scored) == summary["n_docs"]
    assert (scored["uncertainty"] >= 0.45).sum() == scored["review"].sum()
    assert signal.getsignal(signal.SIGTERM) is previous_handler  # restored
    assert not spark.streams.active
