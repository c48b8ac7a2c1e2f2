"""Daily ingest: score one day's new complaints, flag them, add the rest to the pool.

One day ``D`` (a ``datetime.date``; the Airflow DAG ``daily_ingest`` passes the run's
logical date, which for its scheduled and backfill runs is ``data_interval_start``)::

    landing/<D>*.csv, landing/<D>/*.csv, landing/date=<D>/*.csv   (or an s3:// prefix)
        |  stage_day: the corpus rules + "Date received must be D"; no Spark
        v
    <workspace>/<task>/staged/date=<D>/{docs.parquet, rejects.csv, manifest.json}
        |  score_day: saved featurizer -> model under an alias -> flag()
        v
    <workspace>/<task>/scored/date=<D>/
        escalate.csv      P(escalation_class) >= escalation_probability, most likely first
        review.csv        uncertainty >= review_uncertainty, most uncertain first
        scored.parquet    every scored row with its flags and the model version
        rejects.csv       rows not ingested (or not added to the pool), with the reason
        summary.json      the counts returned to Airflow as XCom
    <workspace>/<task>/features/<fp>/additions/<D>/   every row not escalated joins the pool

Re-running a day replaces all of that day's outputs as a whole (the scored folder is
swapped in with a rename and the pool addition replaces its key), so backfills are
idempotent. With no model under the alias the day is still added to the pool and the
summary says, in ``message``, that nothing was scored.

``al daily --date A --to B`` runs the same functions without Airflow.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import time

import numpy as np
import pandas as pd
import scipy.sparse as sp

from al_tasks.config import LoopConfig
from al_tasks.io.atomic import atomic_write_bytes, atomic_write_text, fresh_dir, swap_in
from al_tasks.io.complaints import DATE_COLUMN, empty_rejects, landing_files, parse_day, read_complaint_files
from al_tasks.io.people_csv import people_csv_bytes
from al_tasks.ml.features import FeatureSet, add_to_pool, current_feature_set, featurize, transform_texts
from al_tasks.ml.flag import flag
from al_tasks.spark import stop_spark_if_started
from al_tasks.tracking import CHAMPION, ModelCache
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)

#: Columns of the people-facing escalate.csv / review.csv.
LIST_COLUMNS = (
    "id",
    "date_received",
    "predicted_label",
    "p_escalation",
    "confidence",
    "uncertainty",
    "escalate",
    "review",
    "model_version",
    "text",
)


def pool_key(day: dt.date) -> str:
    """Key of a day's pool addition: the ISO date."""
    return day.isoformat()


# --- stage ------------------------------------------------------------------------------------
def date_rejects(docs: pd.DataFrame, day: dt.date) -> np.ndarray:
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


def stage_day(config: LoopConfig, day: str | dt.date, *, landing: str | None = None, s3_client=None) -> dict:
    """Read and check ``day``'s landing files; write them to ``staged/date=<day>/``. No Spark.

    Rows are kept once across the day's files (first occurrence of an id wins) and only
    when their ``Date received`` is empty or ``day``.

    Returns ``{"date", "landing", "files", "n_files", "n_docs", "n_rejected", "staged"}``.
    """
    day = parse_day(day)
    workspace = TaskWorkspace(config)
    landing = landing or str(workspace.default_landing)
    files = landing_files(landing, day, s3_client=s3_client, download_dir=workspace.landing_cache(day))
    docs, reject_frames = read_complaint_files(files, config)
    reasons = date_rejects(docs, day)
    reasons[(reasons == "") & docs["id"].duplicated(keep="first").to_numpy()] = "duplicate id (first occurrence kept)"
    late = reasons != ""
    if late.any():
        reject_frames.append(
            pd.DataFrame(
                {
                    "file": docs["file"].to_numpy()[late],
                    "line": docs["line"].to_numpy()[late],
                    "id": docs["id"].astype(str).to_numpy()[late],
                    "reason": reasons[late],
                    "stage": "read",
                }
            )
        )
    docs = docs.loc[~late].reset_index(drop=True)
    rejects = pd.concat(reject_frames, ignore_index=True) if reject_frames else empty_rejects()
    out = workspace.staged_dir(day)
    staging = fresh_dir(out)
    docs.rename(columns={DATE_COLUMN: "date_received"}).to_parquet(staging / "docs.parquet", index=False)
    rejects.to_csv(staging / "rejects.csv", index=False)
    manifest = {
        "date": day.isoformat(),
        "landing": landing,
        "files": [name for name, _ in files],
        "n_files": len(files),
        "n_docs": int(len(docs)),
        "n_rejected": int(len(rejects)),
    }
    atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
    swap_in(staging, out)
    log.info(
        "stage %s: %s file(s) under %s, %s complaints, %s rejected rows",
        day,
        len(files),
        landing,
        len(docs),
        len(rejects),
    )
    return {**manifest, "staged": str(out)}


# --- score ------------------------------------------------------------------------------------
def read_staged(config: LoopConfig, day: dt.date) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """(manifest, docs, rejects) that :func:`stage_day` left for ``day``."""
    staged = TaskWorkspace(config).staged_dir(day)
    if not (staged / "manifest.json").exists():
        raise FileNotFoundError(f"{staged} has no staged complaints: run stage_day for {day} first")
    manifest = json.loads((staged / "manifest.json").read_text())
    docs = pd.read_parquet(staged / "docs.parquet")
    rejects = pd.read_csv(
        staged / "rejects.csv",
        keep_default_na=False,
        dtype={c: "int64" if c == "line" else "str" for c in empty_rejects().columns},
    )
    return manifest, docs, rejects


def _empty_day(config: LoopConfig, day: dt.date, summary: dict, spark) -> dict:
    """Nothing landed: drop what an earlier run of this day left, so a re-run is exact.

    Checked without loading anything: long backfills are mostly empty days.
    """
    fs = current_feature_set(config)
    if fs is not None and (fs.additions_root / pool_key(day)).exists():
        add_to_pool(
            fs, pool_key(day), pd.DataFrame({"id": np.zeros(0, np.int64), "text": []}), spark=spark, config=config
        )
    shutil.rmtree(TaskWorkspace(config).scored_dir(day), ignore_errors=True)
    summary.update(message=f"no landing files for {day}: nothing scored, nothing added to the pool", outputs=None)
    return summary


def score_day(
    config: LoopConfig, day: str | dt.date, *, alias: str = CHAMPION, spark=None, models: ModelCache | None = None
) -> dict:
    """Score, flag and pool the staged complaints of ``day`` (run :func:`stage_day` first).

    With a model under ``alias``: featurize with the task's saved pipeline, score, flag
    (``config.escalation_*``, ``config.review_uncertainty``), write the lists, and add every
    row that is not escalated to the pool under key ``day``. Without one: add every row to
    the pool and write no lists. A day without landing files loses any earlier outputs.

    ``spark``: a SparkSession, created on demand when None (and left running: the caller
    that owns it stops it). ``models``: a :class:`~al_tasks.tracking.ModelCache` for
    ``alias`` to share across days.

    Returns (JSON-able) ``{"date", "scored" (bool), "message", "alias", "model_version"
    (str or None), "n_files", "n_docs", "n_scored", "n_escalated", "n_review", "n_both",
    "n_pool_added", "n_pool_rejected", "n_rejected", "outputs" (folder or None), "seconds"}``.
    """
    started = time.perf_counter()
    day = parse_day(day)
    manifest, docs, rejects = read_staged(config, day)
    summary = {
        "date": day.isoformat(),
        "scored": False,
        "message": "",
        "alias": alias,
        "model_version": None,
        "n_files": manifest["n_files"],
        "n_docs": int(len(docs)),
        "n_scored": 0,
        "n_escalated": 0,
        "n_review": 0,
        "n_both": 0,
        "n_pool_added": 0,
        "n_pool_rejected": 0,
        "n_rejected": int(len(rejects)),
        "outputs": str(TaskWorkspace(config).scored_dir(day)),
    }
    if manifest["n_files"] == 0:
        summary = _empty_day(config, day, summary, spark)
    else:
        models = models if models is not None and models.alias == alias else ModelCache(config, alias)
        summary = _score_and_swap_in(config, day, docs, rejects, models, summary, spark)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    log.info(
        "score %s: %s; %s added to the pool, %s rejected rows",
        day,
        summary["message"],
        summary["n_pool_added"],
        summary["n_rejected"],
    )
    return summary


def _score_and_swap_in(
    config: LoopConfig, day: dt.date, docs, rejects, models: ModelCache, summary: dict, spark
) -> dict:
    """Build the day's outputs in a hidden folder and swap them in whole (or not at all)."""
    # The saved featurizer lives with the task's feature set; refitted only if the corpus changed.
    fs = current_feature_set(config) or featurize(config, _session(config, spark))
    target = TaskWorkspace(config).scored_dir(day)
    out = fresh_dir(target)
    try:
        summary = _score_into(out, config, day, docs, rejects, fs, models, summary, spark)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # the day's previous outputs stay as they were
        raise
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    swap_in(out, target)
    return summary


def _session(config: LoopConfig, spark):
    from al_tasks.spark import spark_session

    return spark or spark_session(config)


def flag_docs(config: LoopConfig, docs: pd.DataFrame, fs: FeatureSet, model, spark) -> pd.DataFrame:
    """``docs`` (id, text, ...) with :func:`~al_tasks.ml.flag.flag`'s columns, featurized on Spark."""
    if len(docs):
        ids, X = transform_texts(fs.pipeline_path, docs[["id", "text"]], spark=_session(config, spark), config=config)
    else:  # every row was rejected: nothing for Spark to do
        ids, X = np.zeros(0, np.int64), sp.csr_matrix((0, fs.num_features), dtype=np.float32)
    return docs.merge(flag(model, X, ids, config), on="id", how="inner", validate="one_to_one")


def _score_into(
    out,
    config: LoopConfig,
    day: dt.date,
    docs: pd.DataFrame,
    rejects: pd.DataFrame,
    fs: FeatureSet,
    models: ModelCache,
    summary: dict,
    spark,
) -> dict:
    """score_day's work for a day with files: lists and rejects into ``out``, pool addition."""
    model, version = models.get()
    summary = dict(summary)
    pool_docs = docs
    if model is None:
        summary["message"] = (
            f"NOTHING WAS SCORED for {day}: no model is registered under alias {models.alias!r} "
            f"of {config.model_name!r}; {len(docs)} complaints go to the pool unscored"
        )
    else:
        scored = flag_docs(config, docs, fs, model, spark).assign(
            date=day.isoformat(), model_name=config.model_name, model_alias=models.alias, model_version=str(version)
        )
        escalate = scored[scored["escalate"]].sort_values(["p_escalation", "id"], ascending=[False, True])
        review = scored[scored["review"]].sort_values(["uncertainty", "id"], ascending=[False, True])
        pool_docs = scored.loc[~scored["escalate"].to_numpy(dtype=bool)]
        scored.to_parquet(out / "scored.parquet", index=False)
        atomic_write_bytes(out / "escalate.csv", people_csv_bytes(escalate, LIST_COLUMNS))
        atomic_write_bytes(out / "review.csv", people_csv_bytes(review, LIST_COLUMNS))
        summary.update(
            scored=True,
            model_version=str(version),
            n_scored=int(len(scored)),
            n_escalated=int(len(escalate)),
            n_review=int(len(review)),
            n_both=int((scored["escalate"] & scored["review"]).sum()),
            message=(
                f"scored {len(scored)} complaints of {day} with {config.model_name} v{version} "
                f"(@{models.alias}): {len(escalate)} escalated, {len(review)} to review"
            ),
        )
    rejects = _pool(config, day, fs, pool_docs, rejects, summary, spark)
    atomic_write_bytes(out / "rejects.csv", people_csv_bytes(rejects))  # for people: formula-safe
    summary["n_rejected"] = int(len(rejects))
    return summary


def _pool(config, day, fs, pool_docs: pd.DataFrame, rejects: pd.DataFrame, summary: dict, spark) -> pd.DataFrame:
    """Add ``pool_docs`` to the pool under the day's key; returns ``rejects`` plus pool rejects."""
    # Replaces the day's earlier addition as a whole: a re-run never duplicates pool rows.
    added, pool_rejects = add_to_pool(
        fs,
        pool_key(day),
        pool_docs[["id", "text"]].reset_index(drop=True),
        spark=_session(config, spark) if len(pool_docs) else spark,
        config=config,
    )
    summary.update(n_pool_added=int(added), n_pool_rejected=int(len(pool_rejects)))
    if not len(pool_rejects):
        return rejects
    where = pool_docs.set_index("id").loc[pool_rejects["id"].to_numpy()]
    return pd.concat(
        [
            rejects,
            pd.DataFrame(
                {
                    "file": where["file"].to_numpy(),
                    "line": where["line"].to_numpy(),
                    "id": pool_rejects["id"].astype(str).to_numpy(),
                    "reason": pool_rejects["reason"].to_numpy(),
                    "stage": "pool",
                }
            ),
        ],
        ignore_index=True,
    )


# --- one day, many days -------------------------------------------------------------------------
def ingest_day(
    config: LoopConfig,
    day: str | dt.date,
    *,
    landing: str | None = None,
    alias: str = CHAMPION,
    spark=None,
    s3_client=None,
    models: ModelCache | None = None,
) -> dict:
    """:func:`stage_day` then :func:`score_day`; returns score_day's summary plus ``files``."""
    staged = stage_day(config, day, landing=landing, s3_client=s3_client)
    return {**score_day(config, day, alias=alias, spark=spark, models=models), "files": staged["files"]}


def run_days(
    config: LoopConfig, days: list[dt.date], *, landing: str | None = None, alias: str = CHAMPION, s3_client=None
) -> list[dict]:
    """:func:`ingest_day` for every day of ``days``, in order.

    One SparkSession serves the whole range and is stopped at the end if this call
    started it; the model is loaded once per version the alias points to. Returns the
    per-day summaries.
    """
    models = ModelCache(config, alias)
    with stop_spark_if_started():
        return [
            ingest_day(config, day, landing=landing, alias=alias, s3_client=s3_client, models=models) for day in days
        ]


def pool_additions(config: LoopConfig) -> dict[str, int]:
    """Rows per pool-addition key of the task's current feature set ({} if not featurized)."""
    import pyarrow.parquet as pq

    fs = current_feature_set(config)
    if fs is None:
        return {}
    return {p.name: pq.ParquetFile(p / "docs.parquet").metadata.num_rows for p in fs.addition_dirs()}
