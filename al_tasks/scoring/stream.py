"""Streaming scorer: flag new complaint files as they land, with Spark Structured Streaming.

::

    <source>/*.csv|.csv.gz|.json|.jsonl|.ndjson     new files, CFPB format (one complaint per row/line)
        |  file source (format binaryFile): each file is read exactly once, tracked in <checkpoint>
        v
    foreachBatch(batch_df, batch_id)
        parse every file with the corpus rules (io.complaints: rejects with reasons)
        -> saved featurizer (HashingFeaturizer in process, or a Spark PipelineModel) -> CSR -> model -> flag()
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

    al stream --source DIR --output DIR --checkpoint DIR \\
        [--available-now | --processing-time "30 seconds"] [--alias champion] \\
        [--escalation-probability 0.8] [--review-uncertainty 0.4] [--escalation-class X]

``--available-now`` processes what is there and exits;
otherwise it runs as a service until SIGTERM/SIGINT, which lets the running batch
finish (up to ``--grace-seconds``) before stopping the query and Spark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.io.atomic import atomic_write_bytes, atomic_write_parquet
from al_tasks.io.complaints import DATE_COLUMN, REJECT_COLUMNS, is_complaint_file, read_complaint_files
from al_tasks.io.people_csv import people_csv_bytes
from al_tasks.ml.features import load_pipeline, transform_texts
from al_tasks.ml.flag import flag
from al_tasks.scoring.daily import LIST_COLUMNS
from al_tasks.tracking import CHAMPION, ModelCache

log = logging.getLogger(__name__)


#: Spark's fixed schema of the binaryFile source (a streaming source needs it up front).
BINARY_FILE_SCHEMA = "path STRING, modificationTime TIMESTAMP, length BIGINT, content BINARY"
#: Hadoop glob over file names; Python re-checks with io.complaints.is_complaint_file.
SOURCE_GLOB = "*.{csv,csv.gz,json,jsonl,ndjson}"
#: Columns of the people-facing lists: the daily lists' columns, plus where a row came from.
STREAM_LIST_COLUMNS = (*LIST_COLUMNS[:-1], "batch_id", "file", LIST_COLUMNS[-1])
KINDS = ("scored", "escalate", "review")


class BatchScorer:
    """The ``foreachBatch`` function: parse, featurize, score, flag and write one micro-batch.

    Parameters
    ----------
    config : LoopConfig (escalation_class, escalation_probability, review_uncertainty,
        model_name, tracking_uri)
    output : folder of the lists (see the module docstring)
    pipeline_path : the saved featurizer's folder (``FeatureSet.pipeline_path``)
    alias : registry alias whose model scores each batch

    Attributes
    ----------
    model_version : str or None, the version loaded now (that scored the last batch)
    batches : list of dict, the summary of every batch this object ran (also on disk)
    """

    def __init__(self, config: LoopConfig, output: str | Path, pipeline_path: str | Path, *, alias: str = CHAMPION):
        self.config = config
        self.output = Path(output)
        self.pipeline_path = str(pipeline_path)
        self.alias = alias
        self.models = ModelCache(config, alias)
        self.batches: list[dict] = []
        self._pipeline = None

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
            log.warning("stream: alias lookup failed (%s)", exc)
        if model is None:
            if previous[0] is None:
                raise RuntimeError(
                    f"no model under alias {self.alias!r} of {self.config.model_name!r}: "
                    "run an active-learning round first"
                )
            log.info(f"stream: keeping v{previous[1]}")
            self.models.model, self.models.version = previous
            return previous
        if version != previous[1]:
            try:
                self.check_thresholds(model)
            except ValueError:
                self.models.model, self.models.version = previous  # keep scoring with the last good one
                if previous[0] is None:
                    raise
                log.info(f"stream: v{version} does not fit the thresholds; keeping v{previous[1]}")
                return previous
            if previous[1] is not None:
                log.info(f"stream: {self.config.model_name}@{self.alias} moved v{previous[1]} -> v{version}")
        return model, version

    def check_thresholds(self, model) -> None:
        """Raise ``ValueError`` when the flag thresholds cannot work with ``model``
        (flag() refuses an unreachable review threshold or an unknown escalation class).
        """
        import scipy.sparse as sp

        flag(model, sp.csr_matrix((0, 1)), np.zeros(0, np.int64), self.config)

    # --- features ----------------------------------------------------------------------------
    def transform(self, docs: pd.DataFrame, spark):
        """(ids int64 (n,), CSR float32 (n, width of the saved featurizer)) of docs (id, text).

        The saved featurizer is loaded once per scorer (not per batch).
        """
        if self._pipeline is None:
            self._pipeline = load_pipeline(self.pipeline_path)
        return transform_texts(self._pipeline, docs, spark=spark)

    # --- one batch ---------------------------------------------------------------------------
    def __call__(self, batch_df, batch_id: int) -> None:
        started = time.perf_counter()
        files = [(row["path"], bytes(row["content"])) for row in batch_df.select("path", "content").collect()]
        docs, rejects = self.parse(files)
        model, version = self.current_model()
        scored = self.score(docs, model, batch_df.sparkSession).assign(
            batch_id=np.int64(batch_id),
            model_name=self.config.model_name,
            model_alias=self.alias,
            model_version=str(version),
            scored_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        )
        name = f"batch-{batch_id:06d}"
        escalate, review = self.write_lists(name, scored, rejects)
        summary = {
            "batch_id": int(batch_id),
            "files": [path for path, _ in files],
            "n_files": len(files),
            "n_docs": int(len(docs)),
            "n_rejected": int(len(rejects)),
            "n_escalated": int(len(escalate)),
            "n_review": int(len(review)),
            "model_name": self.config.model_name,
            "alias": self.alias,
            "model_version": str(version),
            "seconds": round(time.perf_counter() - started, 2),
            "finished_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        }
        # Written last: a batch with a summary is complete on disk.
        atomic_write_bytes(self.output / "batches" / f"{name}.json", json.dumps(summary, indent=2).encode())
        self.batches.append(summary)
        log.info(
            "stream: batch %s: %s file(s), %s complaints scored with v%s: %s escalated, %s to review, %s rejected rows",
            batch_id,
            len(files),
            len(docs),
            version,
            len(escalate),
            len(review),
            len(rejects),
        )

    def score(self, docs: pd.DataFrame, model, spark) -> pd.DataFrame:
        """``docs`` with :func:`~al_tasks.ml.flag.flag`'s columns (no Spark for an empty batch)."""
        if len(docs):
            ids, X = self.transform(docs, spark)
            return docs.merge(flag(model, X, ids, self.config), on="id", how="inner", validate="one_to_one")
        empty = {
            "predicted_label": "str",
            "confidence": "float64",
            "p_escalation": "float64",
            "uncertainty": "float64",
            "escalate": "bool",
            "review": "bool",
        }
        return docs.assign(**{column: pd.Series([], dtype=kind) for column, kind in empty.items()})

    def write_lists(self, name: str, scored: pd.DataFrame, rejects: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Write a batch's Parquet outputs and people's lists; returns (escalate, review)."""
        escalate = scored[scored["escalate"].to_numpy(dtype=bool)].sort_values(
            ["p_escalation", "id"], ascending=[False, True]
        )
        review = scored[scored["review"].to_numpy(dtype=bool)].sort_values(
            ["uncertainty", "id"], ascending=[False, True]
        )
        for kind, frame in zip(KINDS, (scored, escalate, review)):
            atomic_write_parquet(self.output / "parquet" / kind / f"{name}.parquet", frame.reset_index(drop=True))
        for kind, frame in (("escalate", escalate), ("review", review)):
            atomic_write_bytes(self.output / "csv" / kind / f"{name}.csv", people_csv_bytes(frame, STREAM_LIST_COLUMNS))
        atomic_write_bytes(self.output / "csv" / "rejects" / f"{name}.csv", people_csv_bytes(rejects))
        return escalate, review

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
            reject_frames.append(
                pd.DataFrame(
                    {
                        "file": docs["file"].to_numpy()[dup],
                        "line": docs["line"].to_numpy()[dup],
                        "id": docs["id"].astype(str).to_numpy()[dup],
                        "reason": "duplicate id in the batch (first occurrence kept)",
                        "stage": "read",
                    }
                )
            )
        docs = docs.loc[~dup].rename(columns={DATE_COLUMN: "date_received"}).reset_index(drop=True)
        rejects = (
            pd.concat(reject_frames, ignore_index=True) if reject_frames else pd.DataFrame(columns=list(REJECT_COLUMNS))
        )
        return docs, rejects[list(REJECT_COLUMNS)]


# --- starting, running, stopping --------------------------------------------------------------
def start_stream(
    config: LoopConfig,
    source: str | Path,
    output: str | Path,
    checkpoint: str | Path,
    *,
    available_now: bool = False,
    processing_time: str = "30 seconds",
    alias: str = CHAMPION,
    max_files_per_trigger: int | None = None,
    max_file_age: str = "3650d",
    spark=None,
    query_name: str | None = None,
):
    """Start the streaming query; returns ``(StreamingQuery, BatchScorer)`` without waiting.

    Fails fast (``RuntimeError``/``ValueError``) when no model is under ``alias`` or the
    thresholds cannot work with it. ``max_file_age``: files older than this (relative to
    the newest file seen) are skipped by Spark after the first batch; the default is long
    because complaint files are often copied with their original time stamps.
    """
    from al_tasks.ml.features import current_feature_set, featurize
    from al_tasks.spark import spark_session

    spark = spark or spark_session(config, app_name="al-stream")
    # The task's saved featurizer; fitted only if the corpus changed since the loop ran.
    fs = current_feature_set(config) or featurize(config, spark)
    scorer = BatchScorer(config, output, fs.pipeline_path, alias=alias)
    _model, version = scorer.current_model()
    log.info(
        f"stream: scoring with {config.model_name} v{version} (@{alias}); escalate when "
        f"P({config.escalation_class}) >= {config.escalation_probability}, review when uncertainty >= "
        f"{config.review_uncertainty}"
    )
    Path(source).mkdir(parents=True, exist_ok=True)
    reader = (
        spark.readStream.format("binaryFile")
        .schema(BINARY_FILE_SCHEMA)
        .option("pathGlobFilter", SOURCE_GLOB)
        .option("maxFileAge", max_file_age)
    )
    if max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", int(max_files_per_trigger))
    writer = reader.load(str(source)).writeStream.foreachBatch(scorer).option("checkpointLocation", str(checkpoint))
    if query_name:
        writer = writer.queryName(query_name)
    writer = writer.trigger(availableNow=True) if available_now else writer.trigger(processingTime=processing_time)
    query = writer.start()
    log.info(
        f"stream: watching {source} ({'available now' if available_now else 'every ' + processing_time}), "
        f"checkpoint {checkpoint}, output {output}"
    )
    return query, scorer


def stop_gracefully(query, grace_seconds: float = 60.0) -> None:
    """Let a running micro-batch finish (up to ``grace_seconds``), then stop the query.

    Stopping mid-batch is still safe (the batch is not committed and is replayed, with
    the same id, on restart), just wasted work.
    """
    deadline = time.monotonic() + grace_seconds
    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < deadline:
        time.sleep(0.2)
    query.stop()
    log.info("stream: stopped")


def run_stream(
    config: LoopConfig,
    source: str | Path,
    output: str | Path,
    checkpoint: str | Path,
    *,
    available_now: bool = False,
    processing_time: str = "30 seconds",
    alias: str = CHAMPION,
    max_files_per_trigger: int | None = None,
    grace_seconds: float = 60.0,
    stop_event: threading.Event | None = None,
    spark=None,
) -> dict:
    """Run the scorer until the input is drained (``available_now``) or a stop request.

    A stop request is SIGTERM or SIGINT (when called from the main thread) or
    ``stop_event`` being set. Raises the query's exception if it failed.

    Returns ``{"batches": int, "n_docs": int, "n_escalated": int, "n_review": int,
    "model_versions": [str], "stopped_by": "drained" | "signal"}`` for this run.
    """
    stop_event = stop_event or threading.Event()
    query, scorer = start_stream(
        config,
        source,
        output,
        checkpoint,
        available_now=available_now,
        processing_time=processing_time,
        alias=alias,
        max_files_per_trigger=max_files_per_trigger,
        spark=spark,
    )
    with stop_on_signals(stop_event):
        stopped_by = wait_for_query(query, stop_event, grace_seconds)
    batches = scorer.batches
    return {
        "batches": len(batches),
        "n_docs": sum(b["n_docs"] for b in batches),
        "n_escalated": sum(b["n_escalated"] for b in batches),
        "n_review": sum(b["n_review"] for b in batches),
        "model_versions": sorted({b["model_version"] for b in batches}),
        "stopped_by": stopped_by,
    }


@contextlib.contextmanager
def stop_on_signals(stop_event: threading.Event):
    """SIGTERM / SIGINT set ``stop_event`` inside the block (main thread only); the
    previous handlers come back afterwards.
    """
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            handlers[signum] = signal.signal(signum, lambda *_: stop_event.set())
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def wait_for_query(query, stop_event: threading.Event, grace_seconds: float) -> str:
    """Until the query ends ("drained") or a stop request ("signal"); raises its error."""
    stopped_by = "drained"
    try:
        while query.isActive:
            if stop_event.is_set():
                log.info("stream: stop requested; finishing the running batch")
                stop_gracefully(query, grace_seconds)
                stopped_by = "signal"
                break
            query.awaitTermination(0.5)
        error = query.exception()
        if error is not None:
            raise RuntimeError(f"streaming query failed: {error}")
    finally:
        if query.isActive:
            query.stop()
    return stopped_by


def read_outputs(output: str | Path, kind: str = "scored") -> pd.DataFrame:
    """Every batch's ``kind`` rows (scored | escalate | review) as one DataFrame."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: choose one of {KINDS}")
    folder = Path(output) / "parquet" / kind
    files = sorted(folder.glob("batch-*.parquet")) if folder.exists() else []
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
