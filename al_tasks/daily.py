"""Daily ingest: score one day's new complaints, flag them, add the rest to the pool.

One day ``D`` (a ``datetime.date``; the Airflow DAG ``daily_ingest`` passes the run's
logical date, which for its scheduled and backfill runs is ``data_interval_start``)::

    landing/<D>*.csv, landing/<D>/*.csv, landing/date=<D>/*.csv   (or an s3:// prefix)
        |  stage_day: read_corpus rules + "Date received must be D"; no Spark
        v
    <task_dir>/staged/date=<D>/{docs.parquet, rejects.csv, manifest.json}
        |  score_day: saved featurize pipeline -> model under an alias -> flag()
        v
    <task_dir>/scored/date=<D>/
        escalate.csv      P(escalation_class) >= escalation_probability, most likely first
        review.csv        uncertainty >= review_uncertainty, most uncertain first
        scored.parquet    every scored row with its flags and the model version
        rejects.csv       rows not ingested (or not added to the pool), with the reason
        summary.json      the counts returned to Airflow as XCom
    <task_dir>/features/<fp>/additions/<D>/   every row not escalated joins the pool

Re-running a day replaces all of that day's outputs as a whole (the scored folder is
swapped in with a rename and ``add_to_pool`` replaces its key), so backfills are
idempotent. With no model under the alias the day is still added to the pool and the
summary says, in ``message``, that nothing was scored.

Command line (the same functions the DAG calls; backfill without Airflow)::

    python -m al_tasks.daily --date 2019-02-19 --to 2019-02-21 [--landing DIR|s3://b/p] [--alias champion]
    python -m al_tasks.daily --make-landing DIR [--remainder filtered.csv.gz] [--date A --to B]

This module never imports Airflow; ``plugins/al_daily.py`` wraps it in operators.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import io
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import ConfigError, LoopConfig
from al_tasks.corpus import read_corpus
from al_tasks.labelling import neutralise_formula

DATE_COLUMN = "Date received"
#: File name endings a landing folder (or stream source) may hold.
COMPLAINT_SUFFIXES = (".csv", ".csv.gz", ".json", ".jsonl", ".ndjson")
#: CFPB API / JSON export names of the columns, mapped to the CSV export's names.
JSON_FIELD_ALIASES = {
    "complaint_id": "Complaint ID",
    "date_received": "Date received",
    "complaint_what_happened": "Consumer complaint narrative",
}
#: Columns of every rejects file.
REJECT_COLUMNS = ("file", "line", "id", "reason", "stage")
#: Columns of the people-facing escalate.csv / review.csv (the stream adds its own).
LIST_COLUMNS = ("id", "date_received", "predicted_label", "p_escalation", "confidence", "uncertainty",
                "escalate", "review", "model_version", "text")

Log = Callable[[str], None]


# --- dates and paths --------------------------------------------------------------------------
def parse_day(value: str | dt.date | dt.datetime) -> dt.date:
    """``YYYY-MM-DD`` (or a date/datetime) -> ``datetime.date``; raises ``ValueError``."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip()[:10])


def day_range(start: str | dt.date, end: str | dt.date | None = None) -> list[dt.date]:
    """Every day from ``start`` to ``end`` inclusive (just ``start`` when end is None)."""
    first, last = parse_day(start), parse_day(end) if end else parse_day(start)
    if last < first:
        raise ValueError(f"--to {last} is before --date {first}")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def default_landing(config: LoopConfig) -> str:
    """``<workspace>/landing``: where new complaint files arrive unless told otherwise."""
    return str(Path(config.workspace) / "landing")


def staged_dir(config: LoopConfig, day: dt.date) -> Path:
    return config.task_dir / "staged" / f"date={day.isoformat()}"


def scored_dir(config: LoopConfig, day: dt.date) -> Path:
    return config.task_dir / "scored" / f"date={day.isoformat()}"


def pool_key(day: dt.date) -> str:
    """Key of a day's pool addition (``add_to_pool``): the ISO date."""
    return day.isoformat()


# --- reading complaint files ------------------------------------------------------------------
def is_complaint_file(name: str) -> bool:
    """True for visible ``.csv``, ``.csv.gz``, ``.json``, ``.jsonl`` or ``.ndjson`` files.

    Names starting with ``.`` or ``_`` are in-flight or bookkeeping files (Spark's file
    source skips them too), so writers can drop a file atomically by renaming it.
    """
    base = name.rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and base.lower().endswith(COMPLAINT_SUFFIXES)


def read_complaint_file(path: str | Path, config: LoopConfig, *, name: str | None = None,
                        extra_columns: Iterable[str] = (DATE_COLUMN,)) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one CFPB-format file (CSV, CSV.gz or JSON lines) with the corpus rules.

    Rows without narrative, with a non-integer id, with bytes that are not UTF-8 or with
    an id already seen in the file are rejected, exactly as :func:`al_tasks.corpus.read_corpus`
    does for the corpus (it does the checking).

    Parameters
    ----------
    path : the file; its suffix picks the format
    name : what to call the file in the outputs (default: its name)
    extra_columns : columns copied next to each kept row when the file has them
        (missing ones are empty strings)

    Returns
    -------
    docs : DataFrame ``id`` int64, ``text`` str, ``file`` str, ``line`` int64, then
        ``extra_columns`` (str), one row per kept complaint, in file order
    rejects : DataFrame with :data:`REJECT_COLUMNS` (``line`` is the CSV record number
        with the header as 1, or the JSON line number; ``stage`` is ``"read"``)
    """
    path = Path(path)
    name = name or path.name
    extra_columns = list(extra_columns)
    if path.name.lower().endswith((".json", ".jsonl", ".ndjson")):
        with tempfile.TemporaryDirectory(prefix="al-jsonl-") as tmp:
            csv_path, line_of_row, json_rejects = _jsonl_to_csv(path, Path(tmp) / "rows.csv", config)
            docs, rejects = _read_csv_file(csv_path, config, name, extra_columns)
        # read_corpus numbers records from 2 (header = 1); map back to JSON line numbers.
        rejects["line"] = line_of_row[rejects["line"].to_numpy(dtype=np.int64) - 2]
        docs["line"] = line_of_row[docs["line"].to_numpy(dtype=np.int64) - 2]
        rejects = pd.concat([json_rejects.assign(file=name), rejects], ignore_index=True)
        return docs, rejects.sort_values("line", kind="stable").reset_index(drop=True)[list(REJECT_COLUMNS)]
    return _read_csv_file(path, config, name, extra_columns)


def _read_csv_file(path: Path, config: LoopConfig, name: str, extra_columns: list[str]):
    corpus = read_corpus(path, config, with_labels=False)
    rejects = corpus.rejects.assign(file=name, stage="read")[list(REJECT_COLUMNS)]
    # read_corpus keeps id and text only; the same pandas options give the same records,
    # so the kept ones are the positions not rejected (its line = position + 2).
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace",
                      usecols=lambda c: c in {config.id_column, *extra_columns})
    kept = np.setdiff1d(np.arange(len(raw)), corpus.rejects["line"].to_numpy(dtype=np.int64) - 2)
    if len(kept) != len(corpus.docs):
        raise RuntimeError(f"{path}: {len(kept)} kept records but read_corpus returned {len(corpus.docs)}")
    docs = corpus.docs[["id", "text"]].assign(file=name, line=(kept + 2).astype(np.int64))
    for column in extra_columns:
        values = raw[column].to_numpy(dtype=object)[kept] if column in raw.columns else np.full(len(kept), "", object)
        docs[column] = pd.Series(values, index=docs.index, dtype="str")
    return docs.reset_index(drop=True), rejects.reset_index(drop=True)


def _jsonl_to_csv(path: Path, out: Path, config: LoopConfig) -> tuple[Path, np.ndarray, pd.DataFrame]:
    """JSON lines -> a UTF-8 CSV read_corpus can check; (csv, JSON line of each row, rejects).

    A line that is not UTF-8 or not a JSON object is rejected here, because once decoded
    with replacement it could no longer be told apart.
    """
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    records, lines, rejects = [], [], []
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                rejects.append((number, "", "line has bytes that are not UTF-8"))
                continue
            except json.JSONDecodeError as exc:
                rejects.append((number, "", f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(record, dict):
                rejects.append((number, "", "not a JSON object"))
                continue
            record = {JSON_FIELD_ALIASES.get(k, k): ("" if v is None else str(v)) for k, v in record.items()}
            records.append(record)
            lines.append(number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    for column in (config.id_column, config.text_column):
        if column not in frame.columns:
            frame[column] = pd.Series([""] * len(frame), dtype="str")
    frame.to_csv(out, index=False)
    json_rejects = pd.DataFrame(rejects, columns=["line", "id", "reason"]).assign(stage="read")
    return out, np.asarray(lines, dtype=np.int64), json_rejects


# --- landing ----------------------------------------------------------------------------------
def _matches_day(relative: str, day: dt.date) -> bool:
    """``<D>[-_.]*.ext``, ``<D>/...`` or ``date=<D>/...`` (relative to the landing root)."""
    iso = day.isoformat()
    if not is_complaint_file(relative):
        return False
    if "/" in relative:
        return relative.split("/", 1)[0] in {iso, f"date={iso}"}
    # 2019-02-19.csv, 2019-02-19-part2.csv.gz; not 2019-02-190.csv
    return relative.startswith(iso) and not relative[len(iso):len(iso) + 1].isdigit()


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix ending in ``/`` or empty)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, (prefix.rstrip("/") + "/") if prefix.strip("/") else ""


def landing_files(landing: str, day: dt.date, *, s3_client=None, download_dir: str | Path | None = None
                  ) -> list[tuple[str, Path]]:
    """The complaint files of ``day`` under ``landing``, sorted by name.

    ``landing`` is a local folder, or an ``s3://bucket/prefix`` URL read with
    ``s3_client`` (a boto3 S3 client); S3 objects are downloaded to ``download_dir``.

    Returns a list of (name shown in outputs, local path).
    """
    if landing.startswith("s3://"):
        from al_tasks import s3

        if s3_client is None:
            raise ValueError(f"landing {landing} is on S3 but no S3 client was given")
        if download_dir is None:
            raise ValueError("download_dir is required for an S3 landing location")
        bucket, prefix = split_s3_url(landing)
        download_dir = Path(download_dir)
        if download_dir.exists():
            shutil.rmtree(download_dir)  # a re-run sees the bucket as it is now
        found = []
        for key in s3.list_keys(s3_client, bucket, prefix):
            relative = key[len(prefix):]
            if _matches_day(relative, day):
                local = s3.download_file(s3_client, bucket, key, download_dir / relative)
                found.append((f"s3://{bucket}/{key}", local))
        return sorted(found)
    root = Path(landing)
    if not root.is_dir():
        raise FileNotFoundError(f"landing folder {root} does not exist")
    iso = day.isoformat()
    # Only where a day's files can be: a landing folder holds years of them.
    candidates = [*root.glob(f"{iso}*"), *(root / iso).rglob("*"), *(root / f"date={iso}").rglob("*")]
    found = set()
    for path in candidates:
        relative = path.relative_to(root).as_posix()
        if path.is_file() and _matches_day(relative, day):
            found.add((relative, path))
    return sorted(found)


def _date_rejects(docs: pd.DataFrame, day: dt.date) -> np.ndarray:
    """Per row: "" or why its ``Date received`` (empty is fine: taken as ``day``) is wrong.

    ISO dates (CFPB API) and MM/DD/YYYY (older CSV downloads) are both accepted.
    """
    raw = docs[DATE_COLUMN].astype(str).str.strip() if DATE_COLUMN in docs else pd.Series("", index=docs.index)
    parsed = pd.to_datetime(raw, errors="coerce", format="ISO8601")
    for fmt in ("%m/%d/%Y", "%m/%d/%y"):
        parsed = parsed.fillna(pd.to_datetime(raw.where(parsed.isna()), errors="coerce", format=fmt))
    reasons = np.full(len(docs), "", dtype=object)
    bad = (raw != "") & parsed.isna()
    reasons[bad.to_numpy()] = "Date received is not a date"
    other = (raw != "").to_numpy() & ~bad.to_numpy()
    other &= parsed.dt.date.to_numpy(dtype=object) != day
    reasons[other] = [f"Date received {v} is not the run date {day.isoformat()}" for v in raw.to_numpy()[other]]
    return reasons


def read_complaint_files(named_paths, config: LoopConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Read several complaint files: (all docs concatenated, one rejects frame per file).

    A file that cannot be read at all (no id/narrative column, broken CSV) becomes one
    reject line; the other files still go through.
    """
    frames, reject_frames = [], []
    for name, path in named_paths:
        try:
            docs, rejects = read_complaint_file(path, config, name=name)
            frames.append(docs)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            rejects = pd.DataFrame({"file": [name], "line": [0], "id": [""],
                                    "reason": [f"file not readable: {exc}"], "stage": ["read"]})
        reject_frames.append(rejects)
    docs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"id": np.zeros(0, np.int64), "text": pd.Series([], dtype="str"), "file": pd.Series([], dtype="str"),
         "line": np.zeros(0, np.int64), DATE_COLUMN: pd.Series([], dtype="str")})
    return docs, reject_frames


def stage_day(config: LoopConfig, day: str | dt.date, *, landing: str | None = None, s3_client=None,
              log: Log = print) -> dict:
    """Read and check ``day``'s landing files; write them to ``staged/date=<day>/``. No Spark.

    Rows are kept once across the day's files (first occurrence of an id wins) and only
    when their ``Date received`` is empty or ``day``.

    Returns ``{"date", "landing", "files", "n_files", "n_docs", "n_rejected", "staged"}``
    (JSON-able; ``files`` lists the names read).
    """
    day = parse_day(day)
    landing = landing or default_landing(config)
    out = staged_dir(config, day)
    files = landing_files(landing, day, s3_client=s3_client,
                          download_dir=config.task_dir / "landing_cache" / f"date={day}")
    docs, reject_frames = read_complaint_files(((name, path) for name, path in files), config)
    reasons = _date_rejects(docs, day)
    reasons[(reasons == "") & docs["id"].duplicated(keep="first").to_numpy()] = "duplicate id (first occurrence kept)"
    late = reasons != ""
    if late.any():
        reject_frames.append(pd.DataFrame({"file": docs["file"].to_numpy()[late], "line": docs["line"].to_numpy()[late],
                                           "id": docs["id"].astype(str).to_numpy()[late],
                                           "reason": reasons[late], "stage": "read"}))
    docs = docs.loc[~late].reset_index(drop=True)
    rejects = pd.concat(reject_frames, ignore_index=True) if reject_frames else _empty_rejects()
    staging = _fresh_dir(out)
    docs.rename(columns={DATE_COLUMN: "date_received"}).to_parquet(staging / "docs.parquet", index=False)
    rejects.to_csv(staging / "rejects.csv", index=False)
    manifest = {"date": day.isoformat(), "landing": landing, "files": [name for name, _ in files],
                "n_files": len(files), "n_docs": int(len(docs)), "n_rejected": int(len(rejects))}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    _swap_in(staging, out)
    log(f"stage {day}: {len(files)} file(s) under {landing}, {len(docs)} complaints, {len(rejects)} rejected rows")
    return {**manifest, "staged": str(out)}


def _empty_rejects() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "line" else "str") for c in REJECT_COLUMNS})


# --- scoring ----------------------------------------------------------------------------------
#: MLflow error codes that mean "there is no such registered model / alias" (not an outage).
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}


class ModelCache:
    """The model under a registry alias, looked up again on every :meth:`get`.

    A lookup is one registry query; the model itself (``models:/<name>/<version>``, by
    version so a promotion between lookup and load cannot mix versions) is loaded only
    when the alias moved. A backfill over many days or a stream of micro-batches thus
    follows promotions without reloading the model for every day or batch.

    ``get()`` returns (model, version str), or (None, None) when no model is registered
    under the alias. Any other registry error (e.g. a tracking server that is down) is
    raised: that must fail the run, not silently skip scoring.
    """

    def __init__(self, config: LoopConfig, alias: str = "champion"):
        self.config = config
        self.alias = alias
        self.model = None
        self.version: str | None = None

    def lookup(self) -> str | None:
        """The version the alias points to now, or None if there is none."""
        from mlflow.exceptions import MlflowException

        from al_tasks.tracking import client

        try:
            found = client(self.config).get_model_version_by_alias(self.config.model_name, self.alias)
        except MlflowException as exc:
            if exc.error_code in _NOT_FOUND_CODES:
                return None
            raise
        return str(found.version)

    def get(self):
        import mlflow.sklearn

        version = self.lookup()
        if version is None:
            return None, None
        if version != self.version:
            self.model = mlflow.sklearn.load_model(f"models:/{self.config.model_name}/{version}")
            self.version = version
        return self.model, self.version


def score_day(config: LoopConfig, day: str | dt.date, *, alias: str = "champion", spark=None,
              models: ModelCache | None = None, log: Log = print) -> dict:
    """Score, flag and pool the staged complaints of ``day`` (run :func:`stage_day` first).

    With a model under ``alias``: featurize with the task's saved pipeline, score, flag
    (``config.escalation_*``, ``config.review_uncertainty``), write the lists, and add every
    row that is not escalated to the pool under key ``day``. Without one: add every row to
    the pool and write no lists. A day without landing files loses any earlier outputs.

    ``spark``: a SparkSession, created on demand when None (and left running: the
    caller that owns it stops it). ``models``: a :class:`ModelCache` for ``alias`` to
    share across days (one is made when None).

    Returns (JSON-able) ``{"date", "scored" (bool), "message", "alias", "model_version"
    (str or None), "n_files", "n_docs", "n_scored", "n_escalated", "n_review", "n_both",
    "n_pool_added", "n_pool_rejected", "n_rejected", "outputs" (folder or None), "seconds"}``.
    """
    from al_tasks.featurize import FeatureSet, add_to_pool, featurize, fingerprint

    started = time.perf_counter()
    day = parse_day(day)
    staged = staged_dir(config, day)
    if not (staged / "manifest.json").exists():
        raise FileNotFoundError(f"{staged} has no staged complaints: run stage_day for {day} first")
    manifest = json.loads((staged / "manifest.json").read_text())
    docs = pd.read_parquet(staged / "docs.parquet")
    rejects = pd.read_csv(staged / "rejects.csv", dtype={c: "int64" if c == "line" else "str" for c in REJECT_COLUMNS},
                          keep_default_na=False)
    summary = {"date": day.isoformat(), "scored": False, "message": "", "alias": alias, "model_version": None,
               "n_files": manifest["n_files"], "n_docs": int(len(docs)), "n_scored": 0, "n_escalated": 0,
               "n_review": 0, "n_both": 0, "n_pool_added": 0, "n_pool_rejected": 0,
               "n_rejected": int(len(rejects)), "outputs": str(scored_dir(config, day))}

    def _spark():
        from al_tasks.spark import spark_session

        return spark or spark_session(config)

    if manifest["n_files"] == 0:
        # Nothing landed: drop what an earlier run of this day left, so a re-run is exact.
        # (Checked without loading anything: long backfills are mostly empty days.)
        features_root = config.task_dir / "features" / fingerprint(config.corpus_path, config)
        if (features_root / "additions" / pool_key(day)).exists():
            add_to_pool(FeatureSet.load(features_root), pool_key(day), docs[["id", "text"]], spark=spark, config=config)
        shutil.rmtree(scored_dir(config, day), ignore_errors=True)
        summary.update(message=f"no landing files for {day}: nothing scored, nothing added to the pool",
                       outputs=None, seconds=round(time.perf_counter() - started, 2))
        log(f"score {day}: {summary['message']}")
        return summary

    # The saved pipeline lives with the task's feature set; reused unless the corpus changed.
    fs = featurize(config, _spark() if not _featurized(config) else spark, log=log)
    models = models if models is not None and models.alias == alias else ModelCache(config, alias)
    model, version = models.get()
    out = _fresh_dir(scored_dir(config, day))
    try:
        summary = _score_into(out, config, day, docs, rejects, fs, model, version, alias, summary, spark=spark,
                              get_spark=_spark)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # the day's previous outputs stay as they were
        raise
    summary["seconds"] = round(time.perf_counter() - started, 2)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _swap_in(out, scored_dir(config, day))
    log(f"score {day}: {summary['message']}; {summary['n_pool_added']} added to the pool, "
        f"{summary['n_rejected']} rejected rows")
    return summary


def _score_into(out: Path, config: LoopConfig, day: dt.date, docs: pd.DataFrame, rejects: pd.DataFrame, fs,
                model, version: str | None, alias: str, summary: dict, *, spark, get_spark) -> dict:
    """score_day's work once the model is known: lists and rejects into ``out``, pool addition."""
    import scipy.sparse as sp

    from al_tasks.featurize import add_to_pool, transform_texts
    from al_tasks.flag import flag

    summary = dict(summary)
    if model is None:
        pool_docs = docs
        summary["message"] = (f"NOTHING WAS SCORED for {day}: no model is registered under alias {alias!r} of "
                              f"{config.model_name!r}; {len(docs)} complaints go to the pool unscored")
    else:
        if len(docs):
            ids, X = transform_texts(fs.pipeline_path, docs[["id", "text"]], spark=get_spark(), config=config)
        else:  # every row was rejected: nothing for Spark to do
            ids, X = np.zeros(0, np.int64), sp.csr_matrix((0, fs.num_features), dtype=np.float32)
        flags = flag(model, X, ids, config)
        scored = docs.merge(flags, on="id", how="inner", validate="one_to_one")
        scored = scored.assign(date=day.isoformat(), model_name=config.model_name, model_alias=alias,
                               model_version=str(version))
        escalate = scored[scored["escalate"]].sort_values(["p_escalation", "id"], ascending=[False, True])
        review = scored[scored["review"]].sort_values(["uncertainty", "id"], ascending=[False, True])
        pool_docs = scored.loc[~scored["escalate"].to_numpy(dtype=bool)]
        scored.to_parquet(out / "scored.parquet", index=False)
        (out / "escalate.csv").write_bytes(people_csv_bytes(escalate, LIST_COLUMNS))
        (out / "review.csv").write_bytes(people_csv_bytes(review, LIST_COLUMNS))
        summary.update(scored=True, model_version=str(version), n_scored=int(len(scored)),
                       n_escalated=int(len(escalate)), n_review=int(len(review)),
                       n_both=int((scored["escalate"] & scored["review"]).sum()),
                       message=(f"scored {len(scored)} complaints of {day} with {config.model_name} v{version} "
                                f"(@{alias}): {len(escalate)} escalated, {len(review)} to review"))
    # Replaces the day's earlier addition as a whole: a re-run never duplicates pool rows.
    added, pool_rejects = add_to_pool(fs, pool_key(day), pool_docs[["id", "text"]].reset_index(drop=True),
                                      spark=get_spark() if len(pool_docs) else spark, config=config)
    if len(pool_rejects):
        where = pool_docs.set_index("id").loc[pool_rejects["id"].to_numpy()]
        rejects = pd.concat([rejects, pd.DataFrame({
            "file": where["file"].to_numpy(), "line": where["line"].to_numpy(),
            "id": pool_rejects["id"].astype(str).to_numpy(), "reason": pool_rejects["reason"].to_numpy(),
            "stage": "pool"})], ignore_index=True)
    rejects.to_csv(out / "rejects.csv", index=False)
    summary.update(n_pool_added=int(added), n_pool_rejected=int(len(pool_rejects)), n_rejected=int(len(rejects)))
    return summary


def _featurized(config: LoopConfig) -> bool:
    """True when featurize() would reuse existing features (so needs no Spark)."""
    from al_tasks.featurize import fingerprint

    return (config.task_dir / "features" / fingerprint(config.corpus_path, config) / "_SUCCESS").exists()


def people_csv_bytes(frame: pd.DataFrame, columns: Iterable[str]) -> bytes:
    """A list for people as CSV bytes: UTF-8 with BOM (Excel detects it), probabilities
    with 4 decimals, formula-like text cells neutralised (CSV injection)."""
    columns = [c for c in columns if c in frame.columns]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for row in frame[columns].itertuples(index=False, name=None):
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue().encode("utf-8-sig")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.4f}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return neutralise_formula(str(value))


# --- whole folders, swapped in at once ----------------------------------------------------------
def _fresh_dir(target: Path) -> Path:
    """An empty hidden sibling of ``target`` to build the new version in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _swap_in(built: Path, target: Path) -> None:
    """Replace ``target`` by ``built``: readers see the old folder or the new one."""
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    if target.exists():
        os.rename(target, old)
    os.rename(built, target)
    shutil.rmtree(old, ignore_errors=True)


# --- one day, many days -------------------------------------------------------------------------
@contextlib.contextmanager
def stop_spark_if_started():
    """Stop, on exit, a SparkSession the block started (one that was already running stays)."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    try:
        yield
    finally:
        after = SparkSession.getActiveSession()
        if before is None and after is not None:
            after.stop()


def ingest_day(config: LoopConfig, day: str | dt.date, *, landing: str | None = None, alias: str = "champion",
               spark=None, s3_client=None, models: ModelCache | None = None, log: Log = print) -> dict:
    """:func:`stage_day` then :func:`score_day`; returns score_day's summary plus ``files``."""
    staged = stage_day(config, day, landing=landing, s3_client=s3_client, log=log)
    return {**score_day(config, day, alias=alias, spark=spark, models=models, log=log), "files": staged["files"]}


def run_days(config: LoopConfig, start: str | dt.date, end: str | dt.date | None = None, *,
             landing: str | None = None, alias: str = "champion", s3_client=None, log: Log = print) -> list[dict]:
    """:func:`ingest_day` for every day from ``start`` to ``end`` inclusive, in order.

    One SparkSession serves the whole range and is stopped at the end if this call
    started it; the model is loaded once per version the alias points to. Returns the
    per-day summaries.
    """
    results = []
    models = ModelCache(config, alias)
    with stop_spark_if_started():
        for day in day_range(start, end):
            results.append(ingest_day(config, day, landing=landing, alias=alias, s3_client=s3_client,
                                      models=models, log=log))
    return results


def pool_additions(config: LoopConfig) -> dict[str, int]:
    """Rows per pool-addition key of the task's current feature set ({} if not featurized)."""
    import pyarrow.parquet as pq

    from al_tasks.featurize import FeatureSet, fingerprint

    root = config.task_dir / "features" / fingerprint(config.corpus_path, config)
    if not (root / "_SUCCESS").exists():
        return {}
    return {p.name: pq.ParquetFile(p / "docs.parquet").metadata.num_rows for p in FeatureSet.load(root).addition_dirs()}


# --- demo and test data -----------------------------------------------------------------------
def make_landing(corpus_path: str | Path, out_dir: str | Path, dates: Iterable[str | dt.date] | None = None, *,
                 config: LoopConfig | None = None, remainder_path: str | Path | None = None) -> dict:
    """Split a CFPB-format corpus into per-day landing files by ``Date received``.

    Writes ``<out_dir>/<YYYY-MM-DD>.csv`` (every column of the corpus, in its order) for
    each day in ``dates`` that has complaints (every dated day when None). With
    ``remainder_path`` the other rows (undated or other days) are written there too, in
    the same format (gzipped when it ends in ``.gz``): a corpus to featurize and seed a
    task on, so the landed complaints are genuinely new to it.

    Returns ``{"files": {date: path}, "n_landed": int, "remainder": str | None,
    "n_remainder": int}``.
    """
    config = config or LoopConfig()
    raw = pd.read_csv(corpus_path, dtype=str, keep_default_na=False)
    if DATE_COLUMN not in raw.columns:
        raise ConfigError(f"{corpus_path}: no {DATE_COLUMN!r} column to split by")
    days = raw[DATE_COLUMN].str.strip().str[:10]
    wanted = set(days[days != ""]) if dates is None else {parse_day(d).isoformat() for d in dates}
    landed = days.isin(wanted) & (days != "")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for day, rows in raw[landed].groupby(days[landed], sort=True):
        path = out_dir / f"{day}.csv"
        tmp = out_dir / f".{day}.csv.tmp"  # hidden until complete: a watching stream skips it
        rows.to_csv(tmp, index=False)
        os.replace(tmp, path)
        files[day] = str(path)
    if remainder_path:
        Path(remainder_path).parent.mkdir(parents=True, exist_ok=True)
        raw[~landed].to_csv(remainder_path, index=False)
    return {"files": files, "n_landed": int(landed.sum()), "remainder": str(remainder_path) if remainder_path else None,
            "n_remainder": int((~landed).sum())}


# --- command line -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m al_tasks.daily", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--date", help="first day, YYYY-MM-DD")
    parser.add_argument("--to", help="last day (inclusive); default: --date")
    parser.add_argument("--landing",
                        help="folder or s3://bucket/prefix of CFPB-format files (default <workspace>/landing)")
    parser.add_argument("--alias", default="champion", help="registry alias of the model to score with")
    parser.add_argument("--workspace")
    parser.add_argument("--task")
    parser.add_argument("--corpus", dest="corpus_path")
    parser.add_argument("--escalation-class")
    parser.add_argument("--escalation-probability", type=float)
    parser.add_argument("--review-uncertainty", type=float)
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="any LoopConfig setting (repeatable)")
    parser.add_argument("--make-landing", metavar="DIR", help="write per-day landing files from --corpus and exit")
    parser.add_argument("--remainder", help="with --make-landing: also write the rows not landed here")
    parser.add_argument("--json", action="store_true", help="print the per-day summaries as JSON")
    return parser


def config_from_args(args) -> LoopConfig:
    overrides: dict[str, object] = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected name=value")
        overrides[key.strip()] = value
    for name in ("workspace", "task", "corpus_path", "escalation_class", "escalation_probability",
                 "review_uncertainty"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    return LoopConfig.from_env().with_overrides(overrides)


def _log(message: str) -> None:
    # Progress on stderr: stdout carries the result (``--json`` output stays parseable).
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from al_tasks.tracking import disable_mlflow_telemetry

    disable_mlflow_telemetry()
    # PySpark warns on every pandas conversion that pandas 3 is newer than it knows; it works.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        if args.make_landing:
            dates = day_range(args.date, args.to) if args.date else None
            result = make_landing(config.corpus_path, args.make_landing, dates, config=config,
                                  remainder_path=args.remainder)
            print(json.dumps({k: v for k, v in result.items() if k != "files"} | {"n_files": len(result["files"])}))
            return 0
        if not args.date:
            raise ConfigError("--date is required")
        s3_client = None
        landing = args.landing or default_landing(config)
        if landing.startswith("s3://"):
            from al_tasks.s3 import s3_client as make_client

            s3_client = make_client(config.s3_endpoint_url)
        results = run_days(config, args.date, args.to, landing=landing, alias=args.alias, s3_client=s3_client, log=_log)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        totals = {k: sum(r.get(k, 0) for r in results) for k in ("n_docs", "n_scored", "n_escalated", "n_review",
                                                                   "n_pool_added", "n_rejected")}
        unscored = [r["date"] for r in results if r["n_files"] and not r["scored"]]
        print(f"\n{len(results)} day(s), {sum(1 for r in results if r['n_files'])} with files: "
              + ", ".join(f"{k[2:]}={v}" for k, v in totals.items()))
        if unscored:
            print(f"NOTHING WAS SCORED on {len(unscored)} day(s) ({unscored[0]} ...): "
                  f"no model under alias {args.alias!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
