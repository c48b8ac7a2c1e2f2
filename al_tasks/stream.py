"""Streaming scorer: flag new complaint files as they land, with Spark Structured Streaming.

::

    <source>/*.csv|.csv.gz|.json|.jsonl|.ndjson     new files, CFPB format (one complaint per row/line)
        |  file source (format binaryFile): each file is read exactly once, tracked in <checkpoint>
        v
    foreachBatch(batch_df, batch_id)
        parse every file with the corpus rules (daily.read_complaint_file: rejects with reasons)
        -> saved featurize PipelineModel (Spark) -> CSR -> model under an alias -> flag()
        v
    <output>/parquet/{scored,escalate,review}/batch-<id>.parquet     for programs
    <output>/csv/{escalate,review,rejects}/batch-<id>.csv             for people
    <output>/batches/batch-<id>.json                                  written last: counts, files, model version

Why ``binaryFile`` and not the CSV source: a CSV stream needs one fixed schema applied by
*position*, while CFPB files differ in column order and subset, carry multi-line quoted
narratives and, sometimes, bytes that are not UTF-8 (which Spark would silently replace).
Reading whole files and parsing them with the same code as the corpus and the daily DAG
gives the same rows and the same rejects everywhere; featurizing stays a Spark job.

Exactly once, across restarts
    The file source records which files each batch takes in the checkpoint's offset log
    before the batch runs, and the batch is marked done in the commit log after
    ``foreachBatch`` returns. A restart re-runs an uncommitted batch with the same id and
    the same files; every output file is named by the batch id and written with an atomic
    rename, so a replay overwrites and never duplicates. Files already committed are never
    read again. Drop files atomically: write ``.name.tmp`` (hidden names are skipped) and
    rename.

A newly promoted model
    Each micro-batch looks up the version the alias (``champion`` by default) points to,
    a single registry query, and loads that exact version (``models:/<name>/<version>``,
    not the alias, so a promotion between lookup and load cannot mix versions) only when
    it changed. A batch is scored by exactly one version, which every output row records
    in ``model_version``; a promotion takes effect at the next batch boundary, so no row is
    lost or scored twice.

Command line::

    python -m al_tasks.stream --source DIR --output DIR --checkpoint DIR \\
        [--available-now | --once | --processing-time "30 seconds"] [--alias champion] \\
        [--escalation-probability 0.8] [--review-uncertainty 0.4] [--escalation-class X]

``--available-now`` (or its synonym ``--once``) processes what is there and exits;
otherwise it runs as a service until SIGTERM/SIGINT, which lets the running batch
finish (up to ``--grace-seconds``) before stopping the query and Spark.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import ConfigError, LoopConfig
from al_tasks.daily import (DATE_COLUMN, REJECT_COLUMNS, ModelCache, is_complaint_file, people_csv_bytes,
                            read_complaint_files)

Log = Callable[[str], None]

#: Spark's fixed schema of the binaryFile source (a streaming source needs it up front).
BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
#: Hadoop glob over file names; Python re-checks with daily.is_complaint_file.
SOURCE_GLOB = "*.{csv,csv.gz,json,jsonl,ndjson}"
#: Columns of the people-facing lists.
STREAM_LIST_COLUMNS = ("id", "date_received", "predicted_label", "p_escalation", "confidence", "uncertainty",
                       "escalate", "review", "model_version", "batch_id", "file", "text")
KINDS = ("scored", "escalate", "review")


class BatchScorer:
    """The ``foreachBatch`` function: parse, featurize, score, flag and write one micro-batch.

    Parameters
    ----------
    config : LoopConfig (escalation_class, escalation_probability, review_uncertainty,
        model_name, tracking_uri)
    output : folder of the lists (see the module docstring)
    pipeline_path : saved featurize ``PipelineModel`` (``FeatureSet.pipeline_path``)
    alias : registry alias whose model scores each batch

    Attributes
    ----------
    model_version : str or None, the version loaded now (that scored the last batch)
    batches : list of dict, the summary of every batch this object ran (also on disk)
    """

    def __init__(self, config: LoopConfig, output: str | Path, pipeline_path: str | Path, *, alias: str = "champion",
                 log: Log = print):
        self.config = config
        self.output = Path(output)
        self.pipeline_path = str(pipeline_path)
        self.alias = alias
        self.log = log
        self.models = ModelCache(config, alias)
        self.batches: list[dict] = []
        self._pipeline = None
        self._num_features = None

    @property
    def model_version(self) -> str | None:
        return self.models.version

    # --- model -----------------------------------------------------------------------------
    def current_model(self):
        """(model, version) under the alias now; reloads only when the version changed.

        If the registry cannot be asked or the alias was removed, the model already
        loaded keeps scoring (the service should not stop for a registry hiccup); with
        none loaded it raises ``RuntimeError``.
        """
        previous = (self.models.model, self.models.version)
        try:
            model, version = self.models.get()
        except Exception as exc:  # registry unreachable
            model, version = None, None
            self.log(f"stream: alias lookup failed ({exc})")
        if model is None:
            if previous[0] is None:
                raise RuntimeError(f"no model under alias {self.alias!r} of {self.config.model_name!r}: "
                                   "run an active-learning round first")
            self.log(f"stream: keeping v{previous[1]}")
            self.models.model, self.models.version = previous
            return previous
        if version != previous[1]:
            try:
                self.check_thresholds(model)
            except ValueError:
                self.models.model, self.models.version = previous  # keep scoring with the last good one
                if previous[0] is None:
                    raise
                self.log(f"stream: v{version} does not fit the thresholds; keeping v{previous[1]}")
                return previous
            if previous[1] is not None:
                self.log(f"stream: {self.config.model_name}@{self.alias} moved v{previous[1]} -> v{version}")
        return model, version

    def check_thresholds(self, model) -> None:
        """Raise ``ValueError`` when the flag thresholds cannot work with ``model``
        (flag() refuses an unreachable review threshold or an unknown escalation class)."""
        import scipy.sparse as sp

        from al_tasks.flag import flag

        flag(model, sp.csr_matrix((0, 1)), np.zeros(0, np.int64), self.config)

    # --- features ----------------------------------------------------------------------------
    def transform(self, docs: pd.DataFrame, spark):
        """(ids int64 (n,), CSR float32 (n, num_features)) of docs (id, text), in Spark.

        The PipelineModel is loaded once per scorer (not per batch). Features go through
        Parquet because Arrow collection does not carry Spark's VectorUDT.
        """
        import pyarrow.dataset as ds
        from pyspark.ml import PipelineModel

        from al_tasks.featurize import vectors_to_csr

        if self._pipeline is None:
            self._pipeline = PipelineModel.load(self.pipeline_path)
            self._num_features = self._pipeline.stages[2].getNumFeatures()
        with tempfile.TemporaryDirectory(prefix="al-stream-") as tmp:
            path = str(Path(tmp) / "features.parquet")
            frame = spark.createDataFrame(docs[["id", "text"]], schema="id LONG, text STRING")
            self._pipeline.transform(frame).select("id", "features").write.mode("overwrite").parquet(path)
            table = ds.dataset(path, format="parquet").to_table()
        return table.column("id").to_numpy(), vectors_to_csr(table.column("features"), self._num_features)

    # --- one batch ---------------------------------------------------------------------------
    def __call__(self, batch_df, batch_id: int) -> None:
        from al_tasks.flag import flag

        started = time.perf_counter()
        files = [(row["path"], bytes(row["content"])) for row in batch_df.select("path", "content").collect()]
        docs, rejects = self.parse(files)
        model, version = self.current_model()
        if len(docs):
            ids, X = self.transform(docs, batch_df.sparkSession)
            flags = flag(model, X, ids, self.config)
            scored = docs.merge(flags, on="id", how="inner", validate="one_to_one")
        else:
            scored = docs.assign(**{c: pd.Series([], dtype=t) for c, t in (
                ("predicted_label", "str"), ("confidence", "float64"), ("p_escalation", "float64"),
                ("uncertainty", "float64"), ("escalate", "bool"), ("review", "bool"))})
        scored = scored.assign(batch_id=np.int64(batch_id), model_name=self.config.model_name, model_alias=self.alias,
                               model_version=str(version),
                               scored_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))
        escalate = scored[scored["escalate"].to_numpy(dtype=bool)].sort_values(
            ["p_escalation", "id"], ascending=[False, True])
        review = scored[scored["review"].to_numpy(dtype=bool)].sort_values(
            ["uncertainty", "id"], ascending=[False, True])
        name = f"batch-{batch_id:06d}"
        for kind, frame in zip(KINDS, (scored, escalate, review)):
            _atomic_parquet(frame.reset_index(drop=True), self.output / "parquet" / kind / f"{name}.parquet")
        for kind, frame in (("escalate", escalate), ("review", review)):
            _atomic_bytes(people_csv_bytes(frame, STREAM_LIST_COLUMNS), self.output / "csv" / kind / f"{name}.csv")
        _atomic_bytes(rejects.to_csv(index=False).encode(), self.output / "csv" / "rejects" / f"{name}.csv")
        summary = {"batch_id": int(batch_id), "files": [path for path, _ in files], "n_files": len(files),
                   "n_docs": int(len(docs)), "n_rejected": int(len(rejects)), "n_escalated": int(len(escalate)),
                   "n_review": int(len(review)), "model_name": self.config.model_name, "alias": self.alias,
                   "model_version": str(version), "seconds": round(time.perf_counter() - started, 2),
                   "finished_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}
        # Written last: a batch with a summary is complete on disk.
        _atomic_bytes(json.dumps(summary, indent=2).encode(), self.output / "batches" / f"{name}.json")
        self.batches.append(summary)
        self.log(f"stream: batch {batch_id}: {len(files)} file(s), {len(docs)} complaints scored with v{version}: "
                 f"{len(escalate)} escalated, {len(review)} to review, {len(rejects)} rejected rows")

    def parse(self, files: list[tuple[str, bytes]]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """[(path, bytes)] -> (docs: id, text, file, line, date_received; rejects: REJECT_COLUMNS).

        An id seen twice in the batch is kept once (first file in path order wins).
        """
        with tempfile.TemporaryDirectory(prefix="al-stream-files-") as tmp:
            named_paths = []
            for number, (path, content) in enumerate(sorted(files)):
                base = path.rsplit("/", 1)[-1]
                if not is_complaint_file(base):
                    continue
                # Same suffix, so the reader picks the same format (and gzip).
                local = Path(tmp) / f"{number:05d}-{base}"
                local.write_bytes(content)
                named_paths.append((path, local))
            docs, reject_frames = read_complaint_files(named_paths, self.config)
        dup = docs["id"].duplicated(keep="first").to_numpy()
        if dup.any():
            reject_frames.append(pd.DataFrame({"file": docs["file"].to_numpy()[dup],
                                               "line": docs["line"].to_numpy()[dup],
                                               "id": docs["id"].astype(str).to_numpy()[dup],
                                               "reason": "duplicate id in the batch (first occurrence kept)",
                                               "stage": "read"}))
        docs = docs.loc[~dup].rename(columns={DATE_COLUMN: "date_received"}).reset_index(drop=True)
        rejects = (pd.concat(reject_frames, ignore_index=True) if reject_frames
                   else pd.DataFrame(columns=list(REJECT_COLUMNS)))
        return docs, rejects[list(REJECT_COLUMNS)]


def _atomic_bytes(data: bytes, path: Path) -> None:
    """Write via a hidden temp file and rename: a replayed batch replaces, never appends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


# --- starting, running, stopping --------------------------------------------------------------
def start_stream(config: LoopConfig, source: str | Path, output: str | Path, checkpoint: str | Path, *,
                 available_now: bool = False, processing_time: str = "30 seconds", alias: str = "champion",
                 max_files_per_trigger: int | None = None, max_file_age: str = "3650d", spark=None,
                 query_name: str | None = None, log: Log = print):
    """Start the streaming query; returns ``(StreamingQuery, BatchScorer)`` without waiting.

    Fails fast (``RuntimeError``/``ValueError``) when no model is under ``alias`` or the
    thresholds cannot work with it. ``max_file_age``: files older than this (relative to
    the newest file seen) are skipped by Spark after the first batch; the default is long
    because complaint files are often copied with their original time stamps.
    """
    from al_tasks.featurize import featurize
    from al_tasks.spark import spark_session

    spark = spark or spark_session(config, app_name="al-stream")
    fs = featurize(config, spark, log=log)  # the task's saved pipeline; refits only if the corpus changed
    scorer = BatchScorer(config, output, fs.pipeline_path, alias=alias, log=log)
    model, version = scorer.current_model()
    log(f"stream: scoring with {config.model_name} v{version} (@{alias}); escalate when "
        f"P({config.escalation_class}) >= {config.escalation_probability}, review when uncertainty >= "
        f"{config.review_uncertainty}")
    Path(source).mkdir(parents=True, exist_ok=True)
    reader = (spark.readStream.format("binaryFile").schema(BINARY_FILE_SCHEMA)
              .option("pathGlobFilter", SOURCE_GLOB).option("maxFileAge", max_file_age))
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", int(max_files_per_trigger))
    writer = (reader.load(str(source)).writeStream.foreachBatch(scorer)
              .option("checkpointLocation", str(checkpoint)))
    if query_name:
        writer = writer.queryName(query_name)
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=processing_time)
    query = writer.start()
    log(f"stream: watching {source} ({'available now' if available_now else 'every ' + processing_time}), "
        f"checkpoint {checkpoint}, output {output}")
    return query, scorer


def stop_gracefully(query, grace_seconds: float = 60.0, log: Log = print) -> None:
    """Let a running micro-batch finish (up to ``grace_seconds``), then stop the query.

    Stopping mid-batch is still safe (the batch is not committed and is replayed, with
    the same id, on restart), just wasted work.
    """
    deadline = time.monotonic() + grace_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
    log("stream: stopped")


def run_stream(config: LoopConfig, source: str | Path, output: str | Path, checkpoint: str | Path, *,
               available_now: bool = False, processing_time: str = "30 seconds", alias: str = "champion",
               max_files_per_trigger: int | None = None, grace_seconds: float = 60.0,
               stop_event: threading.Event | None = None, spark=None, log: Log = print) -> dict:
    """Run the scorer until the input is drained (``available_now``) or a stop request.

    A stop request is SIGTERM or SIGINT (when called from the main thread) or
    ``stop_event`` being set. Raises the query's exception if it failed.

    Returns ``{"batches": int, "n_docs": int, "n_escalated": int, "n_review": int,
    "model_versions": [str], "stopped_by": "drained" | "signal"}`` for this run.
    """
    stop_event = stop_event or threading.Event()
    query, scorer = start_stream(config, source, output, checkpoint, available_now=available_now,
                                 processing_time=processing_time, alias=alias,
                                 max_files_per_trigger=max_files_per_trigger, spark=spark, log=log)
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: stop_event.set())
    stopped_by = "drained"
    try:
        while query.isActive:
            if stop_event.is_set():
                log("stream: stop requested; finishing the running batch")
                stop_gracefully(query, grace_seconds, log=log)
                stopped_by = "signal"
                break
            query.awaitTermination(0.5)
        error = query.exception()
        if error is not None:
            raise RuntimeError(f"streaming query failed: {error}")
    finally:
        if query.isActive:
            query.stop()
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return {"batches": len(scorer.batches), "n_docs": sum(b["n_docs"] for b in scorer.batches),
            "n_escalated": sum(b["n_escalated"] for b in scorer.batches),
            "n_review": sum(b["n_review"] for b in scorer.batches),
            "model_versions": sorted({b["model_version"] for b in scorer.batches}), "stopped_by": stopped_by}


def read_outputs(output: str | Path, kind: str = "scored") -> pd.DataFrame:
    """Every batch's ``kind`` rows (scored | escalate | review) as one DataFrame."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {KINDS}")
    folder = Path(output) / "parquet" / kind
    files = sorted(folder.glob("batch-*.parquet")) if folder.exists() else []
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


# --- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m al_tasks.stream", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder new complaint files are dropped into")
    parser.add_argument("--output", required=True, help="folder of the escalation/review lists")
    parser.add_argument("--checkpoint", required=True,
                        help="Spark checkpoint folder (keep it: it is the exactly-once record)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--available-now", action="store_true", help="process what is there, then exit")
    mode.add_argument("--once", action="store_true", help="synonym of --available-now (Trigger.Once is deprecated)")
    mode.add_argument("--processing-time", default="30 seconds", help="service mode: micro-batch interval")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--max-files-per-trigger", type=int)
    parser.add_argument("--grace-seconds", type=float, default=60.0)
    parser.add_argument("--escalation-class")
    parser.add_argument("--escalation-probability", type=float)
    parser.add_argument("--review-uncertainty", type=float)
    parser.add_argument("--workspace")
    parser.add_argument("--task")
    parser.add_argument("--corpus", dest="corpus_path")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="any LoopConfig setting (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from al_tasks.daily import config_from_args, stop_spark_if_started
    from al_tasks.tracking import disable_mlflow_telemetry

    disable_mlflow_telemetry()
    # PySpark warns on every pandas conversion that pandas 3 is newer than it knows; it works.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    args = build_parser().parse_args(argv)

    def log(message: str) -> None:
        # Progress on stderr; stdout carries the final JSON summary.
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    try:
        config = config_from_args(args)
        # Stops the session at the end unless one was already running (a caller's).
        with stop_spark_if_started():
            from al_tasks.spark import spark_session

            result = run_stream(config, args.source, args.output, args.checkpoint,
                                available_now=args.available_now or args.once, processing_time=args.processing_time,
                                alias=args.alias, max_files_per_trigger=args.max_files_per_trigger,
                                grace_seconds=args.grace_seconds, spark=spark_session(config, app_name="al-stream"),
                                log=log)
    except (ConfigError, ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
