"""The streaming scorer on real CFPB complaints, real Spark and a real MLflow registry.

The task is seeded and trained on the shipped corpus *without* the complaints of the
streamed days, so every streamed complaint is new to it. The model is binary
(debt_collection vs rest), as the default thresholds assume.
"""

from __future__ import annotations

import dataclasses
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

from al_tasks.config import SHIPPED_CORPUS, LoopConfig

#: Complaint days with 15-28 complaints each in the shipped sample.
DAYS = ("2019-02-19", "2019-02-20", "2019-02-21", "2019-02-22", "2019-02-25", "2019-02-26")
#: Documents of the task's corpus (a sample of the undated rest): seconds, not minutes, to featurize.
CORPUS_DOCS = 2000
POSITIVE = "debt_collection"
#: Bad rows appended to one landing file: (id cell, narrative cell, the reason read_corpus gives).
BAD_ROWS = (
    (b"900000001", b"   ", "empty narrative"),
    (b"abc", b"They keep calling me about a debt I already paid.", "id is not a whole number"),
    (b"900000003", b"Caf\xe9 owner: the debt collector called me at night.", "narrative has bytes that are not UTF-8"),
)


@dataclasses.dataclass
class TaskSetup:
    """A seeded (and maybe trained) binary task plus per-day landing files."""

    config: LoopConfig
    landing: Path
    feature_set: object
    model_version: str | None


def build_task(base: Path, spark, *, days=DAYS, train: bool = True, bad_rows_day: str | None = None) -> TaskSetup:
    """Landing files for ``days``; a task featurized and seeded on a sample of the other
    complaints; with ``train``, round 1 trained (tiny search) and promoted to champion.

    ``bad_rows_day``: append :data:`BAD_ROWS` (CFPB column order of the file) to that
    day's landing file.
    """
    from al_tasks.corpus import binary_labels, read_corpus
    from al_tasks.daily import make_landing
    from al_tasks.featurize import featurize
    from al_tasks.workspace import TaskWorkspace

    landing, rest = base / "landing", base / "rest.csv"
    make_landing(SHIPPED_CORPUS, landing, days, remainder_path=rest)
    frame = pd.read_csv(rest, dtype=str, keep_default_na=False)
    corpus_path = base / "corpus.csv"
    frame.sample(n=CORPUS_DOCS, random_state=0).to_csv(corpus_path, index=False)
    if bad_rows_day:
        _append_bad_rows(landing / f"{bad_rows_day}.csv", bad_rows_day)
    workspace = (base / "workspace").resolve()
    config = LoopConfig(
        workspace=str(workspace), task="debt", corpus_path=str(corpus_path), positive_class=POSITIVE,
        # Explicit: MLFLOW_TRACKING_URI left in the environment by another test must not win.
        mlflow_tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}",
        escalation_class=POSITIVE, spark_master="local[2]", spark_driver_memory="2g", max_evals=3,
        # C in [e, e^4]: a tiny search still finds a model whose probabilities spread out.
        log_c_low=1.0, log_c_high=4.0,
    )
    fs = featurize(config, spark, log=lambda *_: None)
    docs = read_corpus(corpus_path, config).docs
    seed = docs.sample(n=300, random_state=1)
    seed_path = base / "seed.csv"
    pd.DataFrame({"id": seed["id"], "label": binary_labels(seed["label"], POSITIVE)}).to_csv(seed_path, index=False)
    TaskWorkspace(config).seed(seed_path, fs.ids(), log=lambda *_: None)
    version = train_and_promote(config, 1, fs) if train else None
    return TaskSetup(config=config, landing=landing, feature_set=fs, model_version=version)


def train_and_promote(config: LoopConfig, round_number: int, fs) -> str:
    """Train round ``round_number`` and point ``champion`` at it (what a promotion does)."""
    from al_tasks.rounds import train_round
    from al_tasks.tracking import client

    version = train_round(config, round_number, feature_set=fs, log=lambda *_: None)["model_version"]
    client(config).set_registered_model_alias(config.model_name, "champion", version)
    return str(version)


def _append_bad_rows(path: Path, day: str) -> None:
    """Append :data:`BAD_ROWS` to a CFPB-format CSV, in the file's own column order."""
    header = pd.read_csv(path, nrows=0).columns.tolist()
    data = path.read_bytes()
    for id_cell, narrative, _ in BAD_ROWS:
        cells = {"Complaint ID": id_cell, "Date received": day.encode(), "Product": b"Debt collection",
                 "Consumer complaint narrative": b'"' + narrative + b'"'}
        data += b",".join(cells.get(column, b"") for column in header) + b"\n"
    path.write_bytes(data)


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
    from al_tasks.daily import read_complaint_file
    from al_tasks.featurize import transform_texts
    from al_tasks.flag import flag
    from al_tasks.tracking import client

    import mlflow.sklearn

    client(setup.config)
    model = mlflow.sklearn.load_model(f"models:/{setup.config.model_name}/{version}")
    docs = pd.concat([read_complaint_file(f, setup.config)[0] for f in files], ignore_index=True)
    ids, X = transform_texts(setup.feature_set.pipeline_path, docs[["id", "text"]], spark=spark)
    return flag(model, X, ids, setup.config).sort_values("id").reset_index(drop=True)


# --- fixtures -----------------------------------------------------------------------------------
def live_spark():
    """This process's SparkSession, started again if something stopped it.

    Not conftest's ``spark`` fixture: a module using ``tests.fixtures_airflow`` stops the
    active session when it ends, and getOrCreate replaces a stopped one.
    """
    from al_tasks.spark import spark_session

    return spark_session(LoopConfig(spark_master="local[2]", spark_driver_memory="2g"))


@pytest.fixture(scope="module")
def spark():
    """A live SparkSession for this module; stopped at the end if this fixture started it."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    session = live_spark()
    yield session
    if before is None:
        session.stop()


# pytest makes one instance of a session fixture per module that imports it (test_daily
# does); this cache keeps it to one featurized, trained task per session.
_SHARED: dict[str, TaskSetup] = {}


@pytest.fixture(scope="session")
def scoring_task(tmp_path_factory) -> TaskSetup:
    """The task both scoring test modules use (landing days :data:`DAYS`, bad rows on DAYS[1])."""
    if "task" not in _SHARED:
        _SHARED["task"] = build_task(tmp_path_factory.mktemp("scoring_task"), live_spark(), bad_rows_day=DAYS[1])
    return _SHARED["task"]


@pytest.fixture(scope="module")
def task(scoring_task) -> TaskSetup:
    return scoring_task


@pytest.fixture(scope="module")
def dirs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("stream_io")
    return {"source": base / "source", "output": base / "output", "checkpoint": base / "checkpoint"}


def run_available_now(task: TaskSetup, dirs, spark) -> dict:
    from al_tasks.stream import run_stream

    return run_stream(task.config, dirs["source"], dirs["output"], dirs["checkpoint"], available_now=True,
                      spark=spark, log=lambda *_: None)


# --- tests --------------------------------------------------------------------------------------
def test_stream_flags_new_files_once_across_restarts(task, dirs, spark):
    from al_tasks.stream import read_outputs

    # Plain CSV, gzipped CSV and JSON lines are all read.
    gzipped = dirs["source"].parent / f"{DAYS[0]}.csv.gz"
    gzipped.write_bytes(gzip.compress((task.landing / f"{DAYS[0]}.csv").read_bytes()))
    first = [drop(gzipped, dirs["source"]), drop(task.landing / f"{DAYS[1]}.csv", dirs["source"])]
    # JSON lines with the CFPB API's field names.
    jsonl = dirs["source"].parent / "2019-02-21.jsonl"
    rows = pd.read_csv(task.landing / f"{DAYS[2]}.csv", dtype=str, keep_default_na=False)
    with open(jsonl, "w", encoding="utf-8") as fh:
        for _, row in rows.iterrows():
            fh.write(json.dumps({"complaint_id": row["Complaint ID"], "date_received": row["Date received"],
                                 "complaint_what_happened": row["Consumer complaint narrative"]}) + "\n")
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
    people = pd.concat([pd.read_csv(p, dtype={"id": "int64"}, encoding="utf-8-sig")
                        for p in sorted((dirs["output"] / "csv" / "escalate").glob("batch-*.csv"))])
    assert sorted(people["id"]) == sorted(escalate["id"])
    # The bad rows are rejected with their reasons, not scored.
    rejects = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                         for p in sorted((dirs["output"] / "csv" / "rejects").glob("batch-*.csv"))])
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
    from al_tasks.stream import read_outputs

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
    from al_tasks.stream import read_outputs, start_stream, stop_gracefully
    from al_tasks.tracking import client

    batches_dir = dirs["output"] / "batches"
    seen = set(batches_dir.glob("*.json"))
    query, scorer = start_stream(task.config, dirs["source"], dirs["output"], dirs["checkpoint"],
                                 processing_time="1 second", spark=spark, log=lambda *_: None)
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
        stop_gracefully(query, grace_seconds=30, log=lambda *_: None)
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
    from al_tasks.stream import start_stream

    # A binary model's uncertainty is at most 0.5.
    config = task.config.with_overrides({"review_uncertainty": 0.6})
    with pytest.raises(ValueError, match="can never be reached"):
        start_stream(config, tmp_path / "s", tmp_path / "o", tmp_path / "c", available_now=True, spark=spark,
                     log=lambda *_: None)
    assert not spark.streams.active  # refused before a query started


def test_cli_service_stops_cleanly_on_sigterm(task, tmp_path, spark, capsys):
    """``python -m al_tasks.stream`` as a service (its ``main``, in this process so the
    Spark JVM is shared): scores a dropped file, then SIGTERM stops it cleanly, exit 0."""
    from al_tasks import stream

    source, output = tmp_path / "source", tmp_path / "output"
    argv = ["--source", str(source), "--output", str(output), "--checkpoint", str(tmp_path / "checkpoint"),
            "--processing-time", "1 second", "--workspace", task.config.workspace, "--task", task.config.task,
            "--corpus", task.config.corpus_path, "--set", f"positive_class={POSITIVE}",
            "--set", f"mlflow_tracking_uri={task.config.mlflow_tracking_uri}",
            "--escalation-class", POSITIVE, "--review-uncertainty", "0.45"]
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
    assert stream.main(argv) == 0
    helper.join(timeout=10)
    assert not failures, failures
    printed = capsys.readouterr()
    assert "stop requested" in printed.err and "stream: stopped" in printed.err
    summary = json.loads(printed.out.strip().splitlines()[-1])
    assert summary["stopped_by"] == "signal" and summary["n_docs"] > 0
    scored = pd.read_parquet(output / "parquet" / "scored")
    assert len(scored) == summary["n_docs"]
    assert (scored["uncertainty"] >= 0.45).sum() == scored["review"].sum()
    assert signal.getsignal(signal.SIGTERM) is previous_handler  # restored
    assert not spark.streams.active
