"""Throughput and memory on large pools, against the seed recipe and plain modAL.

Pools of 100k and 1M complaints are made by resampling the real narratives (see
:func:`synthesize`): each synthetic complaint copies the product group and sentence
count of a real complaint drawn with replacement, and fills those sentences with
sentences drawn at random from *all* real complaints of the same product group. Length,
vocabulary and label distribution stay realistic; the text is new. Ids are new and
unique (10^10 + i). Written as Parquet under the scratch dir, never committed.

Measured, each in the same run on the same pool:

* project (al_tasks, Spark local[2]):
  - featurize: al_tasks.ml.features.featurize on the Parquet corpus (docs/s);
  - query: al_tasks.ml.query.query, margin, exact global top-100 of the pre-featurized pool;
  - ranked batch: al_tasks.ml.query.query, ranked_batch, 500 from the pool.
* baseline (a), the seed recipe: Spark features turned into dense per-row arrays
  (pyspark.ml.functions.vector_to_array), modAL's margin_sampling per Arrow chunk in a
  pandas UDF (mapInPandas), keeping the top fraction of each chunk (not exact). 2 MB per
  row, so it runs on growing prefixes of the pool in its own process (own SparkSession)
  until a time or memory limit, and is extrapolated linearly.
* baseline (b), plain modAL in one process on a scipy CSR of the whole pool
  (devstack.modal_reference.query_in_memory): margin top-100 at full size; modAL's ranked batch
  (uncertainty_batch_sampling over the whole pool) on growing sub-pools until the time
  limit, extrapolated linearly in pool size.

Memory: peak RSS of the process tree, sampled every 0.1 s by :class:`bench.common.PeakRSS`
(driver Python, the JVM, Python workers). Baselines run in child processes, measured the
same way, so one cannot inflate another's numbers.

The classifier is the project's TextClassifier (liblinear, one-vs-rest, 9 classes) fitted
on ``n_labelled`` random pool docs with their ground-truth product group.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import multiprocessing
import os
import queue as queue_mod
import re
import shutil
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS, LoopConfig
from al_tasks.workspace import TaskWorkspace
from bench.common import (
    DEFAULT_WORKDIR,
    RESULTS_DIR,
    PeakRSS,
    bench_spark,
    machine_info,
    markdown_table,
    quiet_warnings,
    replace_section,
    say,
    write_json,
)

#: The issue's targets on 2 cores (local[2]).
TARGETS = {
    "featurize_docs_per_s": 20_000,
    "featurize_vs_sklearn": 1.0,
    "query_top100_3m_s": 10.0,
    "ranked_batch_500_3m_s": 30.0,
    "peak_driver_gib": 1.5,
    "peak_memory_gib": 6.0,
}
#: Featurizer settings measured besides the loop's defaults (name -> LoopConfig overrides):
#: the plain TF-IDF without the learned LSA block, and the Spark ML stages.
ALTERNATIVES = {
    "tfidf": {"featurizer": "hashing_vectorizer", "sublinear_tf": False, "ngram_max": 1, "lsa_components": 0},
    "spark_ml": {"featurizer": "spark_ml", "sublinear_tf": False, "ngram_max": 1, "lsa_components": 0},
}
ALTERNATIVE_IMPL = {
    "tfidf": "project (TF-IDF only, no LSA)",
    "spark_ml": "project (Spark ML stages)",
}
#: A measurement taken above this 1-minute load average per core is marked, not published.
LOADED_PER_CORE = 1.5
#: The CFPB export's columns, in its order (complaints.csv); "Product group" is the ground truth.
EXPORT_COLUMNS = (
    "Date received",
    "Product",
    "Sub-product",
    "Issue",
    "Sub-issue",
    "Consumer complaint narrative",
    "Company public response",
    "Company",
    "State",
    "ZIP code",
    "Tags",
    "Consumer consent provided?",
    "Submitted via",
    "Date sent to company",
    "Company response to consumer",
    "Timely response?",
    "Consumer disputed?",
    "Complaint ID",
    "Product group",
)
ID_OFFSET = 10**10
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclasses.dataclass(frozen=True)
class ThroughputSettings:
    """What one throughput run does.

    Attributes
    ----------
    sizes : pool sizes (docs) to synthesize and measure
    top_k : query size of the plain query (exact global top-k)
    ranked_batch : batch size of the ranked-batch query
    n_labelled : labelled docs the measured model is fitted on (excluded from the pool)
    seed_recipe_sizes : prefix sizes (rows) the seed recipe is run on, in order, until a limit
    seed_recipe_batch : Arrow records per batch for the seed recipe (each row is 2 MB dense)
    modal_ranked_sizes : sub-pool sizes plain modAL's ranked batch is run on, until a limit
    time_limit_s : a baseline attempt longer than this is stopped (and larger ones skipped)
    memory_limit_gib : a baseline whose process tree exceeds this is stopped
    warmup : featurize and query a 2,000-doc pool first, unmeasured (see :func:`run`)
    empty_share : rows without a narrative per narrative in the synthetic CSV (0.25: one row in five)
    sklearn : measure the scikit-learn single-machine featurize baseline in the same run
    modal_baselines : measure the modAL / seed-recipe query baselines too
    alternatives : names of :data:`ALTERNATIVES` also featurized (each its own feature set)
    query_alternatives : those of ``alternatives`` whose pools are queried too (top-k, ranked batch)
    """

    sizes: tuple[int, ...] = (1_000_000, 3_000_000)
    top_k: int = 100
    ranked_batch: int = 500
    n_labelled: int = 1230
    seed_recipe_sizes: tuple[int, ...] = (250, 500, 1_000, 2_000, 4_000, 8_000, 16_000)
    seed_recipe_batch: int = 250
    modal_ranked_sizes: tuple[int, ...] = (2_500, 5_000, 10_000, 20_000, 40_000)
    time_limit_s: float = 150.0
    memory_limit_gib: float = 12.0
    warmup: bool = True
    empty_share: float = 0.25
    sklearn: bool = True
    modal_baselines: bool = True
    alternatives: tuple[str, ...] = ("tfidf",)
    query_alternatives: tuple[str, ...] = ("tfidf",)


QUICK = ThroughputSettings(
    sizes=(20_000,), seed_recipe_sizes=(250, 500), modal_ranked_sizes=(1_000, 2_000), time_limit_s=60.0
)
#: Validation of the bench itself on a shared machine (50k-200k narratives, no modAL ladders).
VALIDATE = ThroughputSettings(sizes=(50_000, 200_000), modal_baselines=False)


# ------------------------------------------------------------------------ the synthetic pool
def synthesize(n_docs: int, path: Path, *, seed: int = 0, source: Path = SHIPPED_CORPUS, chunk: int = 100_000) -> dict:
    """Write a CFPB-format Parquet corpus of ``n_docs`` resampled complaints to ``path``.

    Columns: ``Complaint ID`` (int64, 10^10 + i), ``Consumer complaint narrative`` (str),
    ``Product group`` (str). Returns a dict (n_docs, mean_chars, seconds, bytes).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    real = pd.read_csv(
        source, dtype=str, keep_default_na=False, usecols=["Consumer complaint narrative", "Product group"]
    )
    real = real[real["Consumer complaint narrative"].str.strip() != ""]
    groups = real["Product group"].to_numpy(dtype=object)
    sentences = [
        np.asarray(_SENTENCE_END.split(t.strip()), dtype=object)
        for t in real["Consumer complaint narrative"].to_numpy(dtype=object)
    ]
    n_sentences = np.array([len(s) for s in sentences])
    # All sentences of each product group, pooled: a synthetic complaint mixes many real ones.
    by_group = {g: np.concatenate([s for s, gg in zip(sentences, groups) if gg == g]) for g in np.unique(groups)}
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.parquet")
    schema = pa.schema(
        [("Complaint ID", pa.int64()), ("Consumer complaint narrative", pa.string()), ("Product group", pa.string())]
    )
    total_chars = 0
    with pq.ParquetWriter(tmp, schema) as writer:
        for start in range(0, n_docs, chunk):
            size = min(chunk, n_docs - start)
            template = rng.integers(0, len(groups), size)
            doc_groups, counts = groups[template], n_sentences[template]
            texts = np.empty(size, dtype=object)
            for g, pool in by_group.items():
                members = np.flatnonzero(doc_groups == g)
                if not len(members):
                    continue
                picks = pool[rng.integers(0, len(pool), counts[members].sum())]
                bounds = np.concatenate([[0], np.cumsum(counts[members])])
                texts[members] = [" ".join(picks[a:b]) for a, b in itertools.pairwise(bounds)]
            total_chars += sum(map(len, texts))
            writer.write_table(
                pa.table(
                    {
                        "Complaint ID": pa.array(np.arange(start, start + size, dtype=np.int64) + ID_OFFSET),
                        "Consumer complaint narrative": pa.array(texts, pa.string()),
                        "Product group": pa.array(doc_groups, pa.string()),
                    },
                    schema=schema,
                )
            )
    tmp.replace(path)
    return {
        "n_docs": n_docs,
        "mean_chars": total_chars / n_docs,
        "seconds": time.perf_counter() - started,
        "bytes": path.stat().st_size,
    }


def synthesize_csv(
    n_narratives: int,
    path: Path,
    *,
    empty_share: float = 0.25,
    seed: int = 0,
    source: Path = SHIPPED_CORPUS,
    chunk: int = 50_000,
) -> dict:
    """Write a CFPB-format CSV (:data:`EXPORT_COLUMNS`) with ``n_narratives`` resampled narratives.

    Narratives are resampled from the shipped real ones as :func:`synthesize` does, and
    split into paragraphs with blank lines (quoted multi-line fields, as in the export);
    ``empty_share`` rows without a narrative per narrative are mixed in at random
    positions (the skip path is part of the measurement). Written chunk by chunk through
    a Parquet scratch copy, so memory stays flat. Returns (n_rows, n_narratives,
    mean_chars, seconds, bytes).
    """
    import pyarrow.parquet as pq

    started = time.perf_counter()
    scratch = path.with_suffix(".narratives.parquet")
    info = synthesize(n_narratives, scratch, seed=seed, source=source, chunk=chunk)
    rng = np.random.default_rng(seed + 1)
    tmp = path.with_suffix(".tmp.csv")
    n_rows = 0
    with open(tmp, "w", encoding="utf-8", newline="") as out:
        for number, batch in enumerate(pq.ParquetFile(scratch).iter_batches(batch_size=chunk)):
            frame = _export_rows(batch.to_pandas(), rng, empty_share, ID_OFFSET + n_narratives + n_rows)
            frame.to_csv(out, index=False, header=number == 0, lineterminator="\n")
            n_rows += len(frame)
    tmp.replace(path)
    scratch.unlink()
    return {
        "n_rows": n_rows,
        "n_narratives": n_narratives,
        "mean_chars": info["mean_chars"],
        "seconds": time.perf_counter() - started,
        "bytes": path.stat().st_size,
    }


def _export_rows(narratives: pd.DataFrame, rng, empty_share: float, first_empty_id: int) -> pd.DataFrame:
    """One chunk of export rows: the narratives (paragraphs) and rows without one, shuffled."""
    texts = narratives["Consumer complaint narrative"].to_numpy(dtype=object)
    # Paragraph breaks after about one sentence in four.
    texts = np.array([re.sub(r"(?<=[.!?]) (?=[A-Z])", _paragraph(rng), t, count=3) for t in texts], dtype=object)
    n_empty = round(len(texts) * empty_share)
    ids = np.concatenate([narratives["Complaint ID"].to_numpy(), first_empty_id + np.arange(n_empty, dtype=np.int64)])
    frame = pd.DataFrame(
        {
            "Complaint ID": ids,
            "Consumer complaint narrative": np.concatenate([texts, np.full(n_empty, "", dtype=object)]),
            "Product group": np.concatenate(
                [narratives["Product group"].to_numpy(dtype=object), np.full(n_empty, "", dtype=object)]
            ),
        }
    ).iloc[rng.permutation(len(ids))]
    filler = {
        "Date received": "2023-05-04",
        "Product": "Debt collection",
        "Sub-product": "Other debt",
        "Issue": "Attempts to collect debt not owed",
        "Sub-issue": "Debt is not yours",
        "Company public response": "Company has responded to the consumer and the CFPB",
        "Company": "EXAMPLE SERVICES, LLC",
        "State": "TX",
        "ZIP code": "75001",
        "Tags": "",
        "Consumer consent provided?": "Consent provided",
        "Submitted via": "Web",
        "Date sent to company": "2023-05-04",
        "Company response to consumer": "Closed with explanation",
        "Timely response?": "Yes",
        "Consumer disputed?": "N/A",
    }
    return frame.assign(**filler)[list(EXPORT_COLUMNS)]


def _paragraph(rng) -> str:
    return "\n\n" if rng.random() < 0.5 else "\n"


# ------------------------------------------------------------------------ scikit-learn baseline
_HASHER = None


def _init_hasher(stop_words: list[str]) -> None:
    from sklearn.feature_extraction.text import HashingVectorizer

    global _HASHER
    _HASHER = HashingVectorizer(
        n_features=1 << 18,
        token_pattern=r"[a-z][a-z']+",
        stop_words=stop_words,
        alternate_sign=False,
        norm=None,
        dtype=np.float32,
    )


def _sklearn_hash_chunk(texts: list[str]):
    return _HASHER.transform(texts)


def sklearn_featurize(
    csv_path: str, out_dir: str, stop_words: list[str], processes: int = 2, chunk_rows: int = 50_000
) -> dict:
    """The single-machine baseline: pandas chunks -> HashingVectorizer (``processes``
    processes) -> TfidfTransformer -> L2 rows -> ``features.npz`` on disk. Same tokens,
    stop words and width as the project's featurizer.
    """
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfTransformer

    started = time.perf_counter()
    column = "Consumer complaint narrative"
    reader = pd.read_csv(csv_path, usecols=[column], dtype=str, keep_default_na=False, chunksize=chunk_rows)
    with multiprocessing.get_context("forkserver").Pool(processes, _init_hasher, (stop_words,)) as pool:
        parts = list(
            pool.imap(_sklearn_hash_chunk, (c.loc[c[column].str.strip() != "", column].tolist() for c in reader))
        )
    tf = sp.vstack(parts).tocsr()
    del parts
    X = TfidfTransformer(norm="l2", smooth_idf=True).fit_transform(tf)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    sp.save_npz(Path(out_dir) / "features.npz", X.astype(np.float32), compressed=False)
    return {"n_docs": X.shape[0], "seconds": time.perf_counter() - started}


# ------------------------------------------------------------------------ child processes
def _child_main(target, args, out_queue) -> None:
    try:
        quiet_warnings()
        out_queue.put(("ok", target(*args)))
    except BaseException:  # report, never hang the parent
        out_queue.put(("error", traceback.format_exc()))


def run_limited(
    target, args: tuple, *, time_limit_s: float, memory_limit_gib: float, startup_allowance_s: float = 0.0
) -> dict:
    """Run ``target(*args)`` in a fresh ("spawn") process with a time and memory limit.

    ``startup_allowance_s`` is added to the time limit for children that start their
    own SparkSession (a JVM start is not part of what they measure).

    Returns a dict: ``status`` (ok | error | time limit | memory limit), ``result``
    (target's return value when ok), ``error`` (str), ``wall_s`` (float, including
    process start), ``peak`` (PeakRSS peaks of the child's process tree, GiB).
    """
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child_main, args=(target, args, out), daemon=False)
    started = time.perf_counter()
    proc.start()
    status, result, error = "ok", None, ""
    with PeakRSS(root_pid=proc.pid) as peak:
        while True:
            try:
                kind, payload = out.get(timeout=0.2)
                if kind == "ok":
                    result = payload
                else:
                    status, error = "error", payload
                break
            except queue_mod.Empty:
                pass
            if not proc.is_alive():
                status, error = "error", f"child exited with code {proc.exitcode}"
                break
            if time.perf_counter() - started > time_limit_s + startup_allowance_s:
                status = "time limit"
                break
            if peak.peaks["total"] > memory_limit_gib:
                status = "memory limit"
                break
    if status in ("time limit", "memory limit"):
        _kill_tree(proc.pid)
    proc.join(timeout=60)
    if proc.is_alive():
        _kill_tree(proc.pid)
        proc.join(timeout=30)
    return {
        "status": status,
        "result": result,
        "error": error,
        "wall_s": time.perf_counter() - started,
        "peak": dict(peak.peaks),
        "load": (peak.load_before, peak.load_max),
    }


def _kill_tree(pid: int) -> None:
    """Kill a child we started and everything it started (its JVM, Python workers)."""
    try:
        parent = psutil.Process(pid)
        procs = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)


# --------------------------------------------------------------- baseline (b): modAL in memory
def modal_in_memory(features_root: str, model, exclude_ids: np.ndarray, k: int) -> dict:
    """Child: load the whole pool as CSR, then modAL's margin_sampling top-k.

    Returns dict (load_s, query_s, n_pool, ids: chosen ids sorted)."""
    from al_tasks.ml.features import FeatureSet, load_features
    from devstack.modal_reference import query_in_memory

    t0 = time.perf_counter()
    ids, X = load_features(FeatureSet.load(features_root))
    in_pool = ~np.isin(ids, exclude_ids)
    pool_ids, X_pool = ids[in_pool], X[np.flatnonzero(in_pool)]
    t1 = time.perf_counter()
    chosen = query_in_memory(model, X_pool, pool_ids, "margin", k)
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "query_s": t2 - t1, "n_pool": int(len(pool_ids)), "ids": np.sort(chosen)}


def modal_ranked_batch(features_root: str, model, pool_ids: np.ndarray, labelled_ids: np.ndarray, n: int) -> dict:
    """Child: modAL's uncertainty_batch_sampling of ``n`` over a sub-pool in memory.

    Returns dict (load_s, query_s, n_pool)."""
    from al_tasks.ml.features import FeatureSet, load_features
    from devstack.modal_reference import query_in_memory

    fs = FeatureSet.load(features_root)
    t0 = time.perf_counter()
    _, X_pool = load_features(fs, pool_ids)
    _, X_lab = load_features(fs, labelled_ids)
    t1 = time.perf_counter()
    query_in_memory(model, X_pool, pool_ids, "ranked_batch", n, X_labelled=X_lab)
    return {"load_s": t1 - t0, "query_s": time.perf_counter() - t1, "n_pool": int(len(pool_ids))}


# ------------------------------------------------------------ baseline (a): the seed recipe
class DenseRows:
    """Adapter: modAL hands the seed recipe's dense rows (ndarray, shape (n, num_features))
    to ``predict_proba``; al_tasks.ml.model.TextClassifier only takes sparse input, so each
    chunk is converted to CSR (one pass over the dense block, no more than the dense
    matrix product the seed recipe's own model did). Picklable for Spark broadcast."""

    def __init__(self, model):
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, X) -> np.ndarray:
        import scipy.sparse as sp

        return self.model.predict_proba(sp.csr_matrix(X))


def seed_recipe(features_path: str, model, k_fraction: float, workspace: str, arrow_batch: int) -> dict:
    """Child: the seed recipe on a featurized (sub-)pool, with its own SparkSession.

    Dense arrays per row (vector_to_array), modAL margin_sampling per Arrow chunk in a
    pandas UDF, the top ``k_fraction`` of each chunk (ceil) kept. Returns dict (query_s,
    n_picked, ids: chosen ids; more or fewer than k, since each chunk keeps a ceil'd fraction).
    """
    from modAL.uncertainty import margin_sampling

    spark = bench_spark(LoopConfig(workspace=workspace, spark_master="local[2]"))
    # 2 MB per dense row: the project's 5,000-row Arrow batches would be 10 GB each.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch))
    model_bc = spark.sparkContext.broadcast(DenseRows(model))

    def per_chunk(chunks):
        clf = model_bc.value
        for pdf in chunks:
            if not len(pdf):
                continue
            # Dense rows as the recipe's vector_to_array made them, (rows, width) float64; the
            # features are Spark's sparse-vector struct (the loop's featurizer writes no VectorUDT).
            X = np.zeros((len(pdf), int(pdf["features"].iloc[0]["size"])))
            for row, vector in enumerate(pdf["features"]):
                X[row, np.asarray(vector["indices"], dtype=np.int64)] = vector["values"]
            n = max(1, math.ceil(k_fraction * len(pdf)))
            result = margin_sampling(clf, X, n_instances=n)
            idx = np.asarray(result[0] if isinstance(result, tuple) else result)
            yield pd.DataFrame({"id": pdf["id"].to_numpy()[idx], "chunk_rows": len(pdf)})

    t0 = time.perf_counter()
    dense = spark.read.parquet(features_path).select("id", "features")
    picked = dense.mapInPandas(per_chunk, "id long, chunk_rows long").toPandas()
    seconds = time.perf_counter() - t0
    spark.stop()
    return {"query_s": seconds, "n_picked": int(len(picked)), "ids": picked["id"].to_numpy()}


# -------------------------------------------------------------------------------- the run
def run(
    settings: ThroughputSettings = ThroughputSettings(),
    *,
    workdir: Path = DEFAULT_WORKDIR,
    results_dir: Path = RESULTS_DIR,
    readme: Path | None = None,
) -> dict:
    """Measure; write ``throughput.csv/json/md/png`` to ``results_dir``.

    Returns dict with ``rows`` (DataFrame, one row per measurement), ``summary``
    (DataFrame, the target table), ``seconds``.
    """
    from al_tasks.ml.features import featurize, load_features
    from al_tasks.ml.model import TextClassifier
    from al_tasks.ml.query import query

    quiet_warnings()
    started = time.perf_counter()
    workdir = Path(workdir) / "throughput"
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    load_before = psutil.getloadavg()
    rows: list[dict] = []
    notes: dict[str, object] = {}

    def record(
        op: str,
        impl: str,
        size: int,
        seconds: float | None,
        *,
        peak: dict | None = None,
        status: str = "measured",
        note: str = "",
        load: tuple[float, float] | None = None,
        **extra,
    ) -> dict:
        loaded = load is not None and max(load) > LOADED_PER_CORE * (os.cpu_count() or 1)
        if loaded and status == "measured":
            status = "measured (loaded)"
        row = {
            "operation": op,
            "implementation": impl,
            "pool_docs": size,
            "seconds": seconds,
            "status": status,
            "peak_total_gib": (peak or {}).get("total"),
            "peak_jvm_gib": (peak or {}).get("jvm"),
            "peak_driver_python_gib": (peak or {}).get("driver_python"),
            "peak_python_workers_gib": (peak or {}).get("python_workers"),
            "note": note,
            "load_before": None if load is None else load[0],
            "load_during": None if load is None else load[1],
            **extra,
        }
        rows.append(row)
        secs = "-" if seconds is None else f"{seconds:.1f}s"
        mem = (
            ""
            if not peak
            else f", peak {peak['total']:.2f} GiB (JVM {peak['jvm']:.2f}, driver {peak['driver_python']:.2f}, "
            f"workers {peak['python_workers']:.2f})"
        )
        say(f"  {op:<13} {impl:<28} {size:>9,} docs: {secs} [{status}]{mem} {note}")
        return row

    # The "project (Spark)" rows measure the loop's default featurizer; ALTERNATIVES have their own rows.
    base = LoopConfig(workspace=str(workdir / "workspace"), spark_master="local[2]")
    spark = bench_spark(base)
    from pyspark.ml.feature import StopWordsRemover

    from al_tasks.ml.features import REDACTION_TOKENS

    # The baseline hashes the same words as the project's featurizer.
    stop_words = StopWordsRemover.loadDefaultStopWords("english") + REDACTION_TOKENS
    # Warm-up: JVM class loading / JIT and Python worker start-up would otherwise be
    # charged to whichever step runs first (they cost ~10 s idle, over a minute on a
    # loaded machine). Measured steps are steady-state; the first query of each pool is
    # still reported separately.
    if settings.warmup:
        warm = workdir / "corpus-warmup.parquet"
        if not warm.exists():
            synthesize(2_000, warm, seed=99)
        warm_cfg = base.with_overrides({"task": "throughput-warmup", "corpus_path": str(warm)})
        shutil.rmtree(TaskWorkspace(warm_cfg).features_dir, ignore_errors=True)
        t0 = time.perf_counter()
        warm_fs = featurize(warm_cfg, spark)
        warm_ids = warm_fs.ids()
        _, X_warm = load_features(warm_fs, warm_ids[:200])
        warm_y = np.resize(np.asarray(PRODUCT_GROUPS, dtype=object), 200)
        warm_model = TextClassifier(classes=PRODUCT_GROUPS).fit(X_warm, warm_y)
        query(warm_fs, warm_model, warm_cfg, exclude_ids=warm_ids[:200], spark=spark)
        notes["warmup_seconds"] = time.perf_counter() - t0
        say(f"throughput: warm-up (featurize + query of 2,000 docs) took {notes['warmup_seconds']:.1f}s")

    def measure_queries(fs, cfg: LoopConfig, size: int, label: str = "") -> tuple:
        """Exact top-k (twice) and ranked batch on ``fs``; returns (model, labelled ids, top-k ids)."""
        # The measured model: fitted on n_labelled random pool docs (ground truth).
        all_ids = fs.ids()
        rng = np.random.default_rng(0)
        labelled_ids = np.sort(rng.choice(all_ids, settings.n_labelled, replace=False))
        labels = pd.read_parquet(fs.docs_path, columns=["id", "label"], filters=[("id", "in", labelled_ids.tolist())])
        _, X_lab = load_features(fs, labelled_ids)
        model = TextClassifier(classes=PRODUCT_GROUPS, C=1.0, penalty="l2").fit(
            X_lab, labels.set_index("id")["label"].loc[labelled_ids].to_numpy(dtype=object)
        )
        del labels

        # Project: exact global top-k (margin), twice (the 2nd is the headline: page cache warm).
        spark_ids = None
        for attempt in ("1st", "2nd"):
            with PeakRSS() as peak:
                result = query(
                    fs,
                    model,
                    cfg.with_overrides({"strategy": "margin", "batch_size": settings.top_k}),
                    exclude_ids=labelled_ids,
                    spark=spark,
                )
            spark_ids = np.sort(result.items["id"].to_numpy())
            record(
                "query top-k",
                f"project (Spark{label}, {attempt})",
                size,
                result.seconds,
                peak=peak.peaks,
                load=(peak.load_before, peak.load_max),
                note=f"exact top-{settings.top_k}",
            )
        with PeakRSS() as peak:
            result = query(
                fs,
                model,
                cfg.with_overrides({"strategy": "ranked_batch", "batch_size": settings.ranked_batch}),
                exclude_ids=labelled_ids,
                labelled_ids=labelled_ids,
                spark=spark,
            )
        record(
            "ranked batch",
            f"project (Spark{label})",
            size,
            result.seconds,
            peak=peak.peaks,
            load=(peak.load_before, peak.load_max),
            note=f"{settings.ranked_batch} from {result.candidates:,} candidates",
        )
        return model, labelled_ids, spark_ids

    largest = None
    for size in settings.sizes:
        corpus = workdir / f"corpus-{size}.csv"
        if not corpus.exists():
            info = synthesize_csv(size, corpus, empty_share=settings.empty_share)
            say(
                f"throughput: synthesized {info['n_rows']:,} CFPB rows, {size:,} with a narrative "
                f"({info['mean_chars']:.0f} chars/narrative, {info['bytes'] / 2**20:.0f} MiB CSV) in "
                f"{info['seconds']:.1f}s -> {corpus}"
            )
        if settings.sklearn:
            out = run_limited(
                sklearn_featurize,
                (str(corpus), str(workdir / f"sklearn-{size}"), stop_words),
                time_limit_s=max(settings.time_limit_s, 3600),
                memory_limit_gib=settings.memory_limit_gib,
            )
            ok = out["status"] == "ok"
            secs = out["result"]["seconds"] if ok else None
            record(
                "featurize",
                "scikit-learn (2 processes)",
                size,
                secs,
                peak=out["peak"],
                status=_status(out),
                docs_per_s=size / secs if ok else None,
                load=out.get("load"),
                note="CSV -> HashingVectorizer + TfidfTransformer -> features.npz",
            )
            shutil.rmtree(workdir / f"sklearn-{size}", ignore_errors=True)
        cfg = base.with_overrides({"task": f"throughput-{size}", "corpus_path": str(corpus)})
        # Always re-ingest and refit: the measurement is CSV -> features on disk.
        shutil.rmtree(TaskWorkspace(cfg).features_dir, ignore_errors=True)
        shutil.rmtree(TaskWorkspace(cfg).corpus_root, ignore_errors=True)
        t0 = time.perf_counter()
        try:
            with PeakRSS() as peak:
                fs = featurize(cfg, spark)
        except Exception as exc:  # e.g. out of memory: report it and go on with the other sizes
            record(
                "featurize",
                "project (Spark)",
                size,
                None,
                peak=peak.peaks,
                status="failed",
                note=f"after {time.perf_counter() - t0:.0f}s: {type(exc).__name__}: {str(exc)[:200]}",
            )
            continue
        record(
            "featurize",
            "project (Spark)",
            size,
            fs.seconds,
            peak=peak.peaks,
            docs_per_s=size / fs.seconds,
            load=(peak.load_before, peak.load_max),
            note=f"CSV -> ingest (Parquet dataset) -> features on disk; loop defaults: {_featurizer_text(cfg)}",
        )
        for name in settings.alternatives:
            alt_cfg, alt_fs = _featurize_alternative(cfg, spark, size, name, record)
            if name in settings.query_alternatives:
                measure_queries(alt_fs, alt_cfg, size, f", {name}")
            shutil.rmtree(TaskWorkspace(alt_cfg).root, ignore_errors=True)

        model, labelled_ids, spark_ids = measure_queries(fs, cfg, size)
        largest = (size, fs, model, labelled_ids, cfg)
        if not settings.modal_baselines:
            continue
        # Baseline (b): plain modAL, one process, whole pool as CSR in memory.
        out = run_limited(
            modal_in_memory,
            (str(fs.root), model, labelled_ids, settings.top_k),
            time_limit_s=max(settings.time_limit_s, 600),
            memory_limit_gib=settings.memory_limit_gib,
        )
        if out["status"] == "ok":
            res = out["result"]
            same = bool(np.array_equal(res["ids"], spark_ids))
            record(
                "load pool",
                "modAL in memory (CSR)",
                size,
                res["load_s"],
                peak=out["peak"],
                note="load_features of the whole pool",
            )
            record(
                "query top-k",
                "modAL in memory (CSR)",
                size,
                res["query_s"],
                peak=out["peak"],
                note=f"margin_sampling; same ids as Spark: {same}",
                load_s=res["load_s"],
            )
            notes[f"modal_same_ids_{size}"] = same
        else:
            record(
                "query top-k",
                "modAL in memory (CSR)",
                size,
                None,
                peak=out["peak"],
                status=_status(out),
                note=out["error"][-300:],
            )
        largest = (size, fs, model, labelled_ids, cfg)

    # Ladders on the largest pool: cost per row does not depend on pool size for the seed
    # recipe; modAL's ranked batch is linear in pool size (x batch x labelled).
    if largest is None:
        raise RuntimeError("featurize failed at every pool size; see the rows above")
    size, fs, model, labelled_ids, cfg = largest
    pool_ids = np.setdiff1d(fs.ids(), labelled_ids)
    if not settings.modal_baselines:
        settings_ladders = ((), ())
    else:
        settings_ladders = (settings.modal_ranked_sizes, settings.seed_recipe_sizes)
    rng = np.random.default_rng(1)
    ladder = {"seed_recipe": [], "modal_ranked": []}

    for n_rows in settings_ladders[0]:
        sub = np.sort(rng.choice(pool_ids, min(n_rows, len(pool_ids)), replace=False))
        out = run_limited(
            modal_ranked_batch,
            (str(fs.root), model, sub, labelled_ids, settings.ranked_batch),
            time_limit_s=settings.time_limit_s,
            memory_limit_gib=settings.memory_limit_gib,
        )
        secs = out["result"]["query_s"] if out["status"] == "ok" else None
        record(
            "ranked batch",
            "modAL in memory (CSR)",
            len(sub),
            secs,
            peak=out["peak"],
            status=_status(out),
            note="uncertainty_batch_sampling over the whole sub-pool",
        )
        if out["status"] != "ok":
            break
        ladder["modal_ranked"].append((len(sub), secs, out["peak"]["total"]))

    sub_dir = workdir / "seed-recipe"
    for n_rows in settings_ladders[1]:
        n_rows = min(n_rows, len(pool_ids))
        path = _write_prefix(spark, fs, pool_ids[:n_rows], sub_dir / f"features-{n_rows}.parquet")
        out = run_limited(
            seed_recipe,
            (str(path), model, settings.top_k / n_rows, str(workdir / "workspace"), settings.seed_recipe_batch),
            time_limit_s=settings.time_limit_s,
            memory_limit_gib=settings.memory_limit_gib,
            startup_allowance_s=90,
        )
        secs = out["result"]["query_s"] if out["status"] == "ok" else None
        note = f"dense {n_rows * 2:,} MB through Arrow, {settings.seed_recipe_batch} rows/batch"
        if out["status"] == "ok":
            exact = _exact_top_k(fs, model, pool_ids[:n_rows], settings.top_k)
            got = out["result"]["ids"]
            recall = len(np.intersect1d(got, exact)) / len(exact)
            note += f"; {len(got)} picked, recall of exact top-{settings.top_k}: {recall:.2f}"
            notes[f"seed_recipe_recall_{n_rows}"] = recall
        record(
            "query top-k",
            "seed recipe (dense, per chunk)",
            n_rows,
            secs,
            peak=out["peak"],
            status=_status(out),
            note=note,
        )
        if out["status"] != "ok":
            break
        ladder["seed_recipe"].append((n_rows, secs, out["peak"]["total"]))
    shutil.rmtree(sub_dir, ignore_errors=True)

    # Extrapolate the baselines that stopped to every pool size, linearly (fixed + slope x rows).
    for key, op, impl in (
        ("seed_recipe", "query top-k", "seed recipe (dense, per chunk)"),
        ("modal_ranked", "ranked batch", "modAL in memory (CSR)"),
    ):
        points = ladder[key]
        for target in settings.sizes:
            if any(p[0] == target for p in points) or not points:
                continue
            est, slope = _extrapolate(points, target)
            last = points[-1]
            record(
                op,
                impl,
                target,
                est,
                status="extrapolated",
                note=f"linear from {len(points)} sizes up to {last[0]:,} rows ({slope * 1e3:.2f} ms/row); "
                f"measured peak {last[2]:.2f} GiB at {last[0]:,}"
                + (f"; dense data {target * 2 / 1024:,.0f} GB" if key == "seed_recipe" else ""),
            )

    table = pd.DataFrame(rows)
    summary = target_table(table, settings)
    seconds = time.perf_counter() - started
    meta = {
        "settings": dataclasses.asdict(settings),
        "targets": TARGETS,
        "notes": notes,
        "machine": machine_info(),
        "load_average_before": load_before,
        "load_average_after": psutil.getloadavg(),
        "total_seconds": seconds,
        "spark": {
            "master": base.spark_master,
            "driver_memory": base.spark_driver_memory,
            "arrow_max_records_per_batch": 5000,
        },
    }
    write_outputs(table, summary, meta, results_dir, readme)
    say(f"throughput: done in {seconds / 60:.1f} min; results in {results_dir}")
    return {"rows": table, "summary": summary, "seconds": seconds, "meta": meta}


def _featurizer_text(cfg: LoopConfig) -> str:
    """The featurize settings of ``cfg`` in a few words (the table's note)."""
    if cfg.featurizer == "spark_ml":
        return "Spark ML stages"
    parts = ["HashingVectorizer in mapInArrow", "sublinear TF" if cfg.sublinear_tf else "raw TF"]
    if cfg.ngram_max > 1:
        parts.append(f"words 1-{cfg.ngram_max}")
    if cfg.lsa_components:
        parts.append(f"{cfg.lsa_components}-dim LSA fitted on {cfg.lsa_sample_size:,} docs")
    return ", ".join(parts)


def _featurize_alternative(cfg: LoopConfig, spark, size: int, name: str, record) -> tuple:
    """featurize with the settings ``ALTERNATIVES[name]``, from CSV (re-ingested) to features on disk.

    Returns (its LoopConfig, its FeatureSet); the caller removes its workspace."""
    from al_tasks.ml.features import featurize

    cfg = cfg.with_overrides({**ALTERNATIVES[name], "task": f"throughput-{name}-{size}"})
    shutil.rmtree(TaskWorkspace(cfg).root, ignore_errors=True)
    with PeakRSS() as peak:
        fs = featurize(cfg, spark)
    record(
        "featurize",
        ALTERNATIVE_IMPL[name],
        size,
        fs.seconds,
        peak=peak.peaks,
        docs_per_s=size / fs.seconds,
        load=(peak.load_before, peak.load_max),
        note=f"CSV -> ingest -> {_featurizer_text(cfg)}",
    )
    return cfg, fs


def _status(out: dict) -> str:
    """A child's outcome as a table status: measured | stopped at time/memory limit | error."""
    return {"ok": "measured", "time limit": "stopped: time limit", "memory limit": "stopped: memory limit"}.get(
        out["status"], out["status"]
    )


def _write_prefix(spark, fs, ids: np.ndarray, path: Path) -> Path:
    """The sparse features of ``ids`` as their own Parquet (the baseline's input), 2 files."""
    from pyspark.sql import functions as F  # noqa: N812 (PySpark's own convention)

    frame = spark.read.parquet(str(fs.features_path))
    frame.where(F.col("id").isin([int(i) for i in ids])).repartition(2).write.mode("overwrite").parquet(str(path))
    return path


def _exact_top_k(fs, model, ids: np.ndarray, k: int) -> np.ndarray:
    from al_tasks.ml.features import load_features
    from al_tasks.ml.query import top_k_order
    from al_tasks.ml.strategies import MarginSampling

    ids, X = load_features(fs, ids)
    scores = MarginSampling().score(model.predict_proba(X), ids)
    return np.sort(ids[top_k_order(scores, ids, k)])


def _extrapolate(points: list[tuple[int, float, float]], target: int) -> tuple[float, float]:
    """(seconds at ``target`` rows, seconds per row) from (rows, seconds, _) points: the
    slope of the last two points (fixed costs cancel), or seconds/rows from one point."""
    if len(points) >= 2:
        (x0, y0, _), (x1, y1, _) = points[-2], points[-1]
        slope = max((y1 - y0) / (x1 - x0), y1 / x1 / 4)  # guard against timing noise
        return y1 + slope * (target - x1), slope
    x1, y1, _ = points[-1]
    return y1 / x1 * target, y1 / x1


# --------------------------------------------------------------------------- reporting
def _get(table: pd.DataFrame, op: str, impl: str, size: int) -> pd.Series | None:
    hit = table[(table["operation"] == op) & (table["implementation"] == impl) & (table["pool_docs"] == size)]
    return None if hit.empty else hit.iloc[-1]


def target_table(table: pd.DataFrame, settings: ThroughputSettings) -> pd.DataFrame:
    """The issue's targets next to the project's numbers (and the scikit-learn ratio)."""
    out = []
    for size in settings.sizes:
        feat = _get(table, "featurize", "project (Spark)", size)
        alternatives = [
            (name, _get(table, "featurize", ALTERNATIVE_IMPL[name], size)) for name in settings.alternatives
        ]
        skl = _get(table, "featurize", "scikit-learn (2 processes)", size)
        q = _get(table, "query top-k", "project (Spark, 2nd)", size)
        rb = _get(table, "ranked batch", "project (Spark)", size)
        ours = table[(table["pool_docs"] == size) & table["implementation"].str.startswith("project")]
        peak, driver = ours["peak_total_gib"].max(), ours["peak_driver_python_gib"].max()
        loaded = bool(ours["status"].astype(str).str.contains("loaded").any())
        measured = [feat] + [r for _, r in alternatives]
        best = max((r["docs_per_s"] for r in measured if r is not None and pd.notna(r["docs_per_s"])), default=None)
        speedup = (
            best / skl["docs_per_s"]
            if best is not None and skl is not None and pd.notna(skl.get("docs_per_s"))
            else None
        )
        full = size >= 3_000_000

        def row(metric, target, value, met, size=size, loaded=loaded):
            loaded = _met(loaded)
            return {"pool": size, "metric": metric, "target": target, "project": value, "met": met, "loaded": loaded}

        out += [
            row(
                "featurize CSV -> features (docs/s)",
                f"≥ {TARGETS['featurize_docs_per_s']:,}",
                f"{feat['docs_per_s']:,.0f}" if feat is not None else "",
                _met(feat is not None and feat["docs_per_s"] >= TARGETS["featurize_docs_per_s"]),
            ),
            *(
                row(
                    f"featurize, {ALTERNATIVE_IMPL[name].removeprefix('project (').rstrip(')')} (docs/s)",
                    f"≥ {TARGETS['featurize_docs_per_s']:,}",
                    f"{alt['docs_per_s']:,.0f}" if alt is not None else "",
                    _met(alt is not None and alt["docs_per_s"] >= TARGETS["featurize_docs_per_s"]),
                )
                for name, alt in alternatives
            ),
            row(
                "featurize (fastest setting) vs scikit-learn (x)",
                f"≥ {TARGETS['featurize_vs_sklearn']:.1f}",
                "" if speedup is None else f"{speedup:.2f} (sklearn {skl['docs_per_s']:,.0f} docs/s)",
                _met(speedup is not None and speedup >= TARGETS["featurize_vs_sklearn"]),
            ),
            row(
                f"query, exact top-{settings.top_k} (s)",
                f"≤ {TARGETS['query_top100_3m_s']:.0f} at 3M",
                f"{q['seconds']:.1f}" if q is not None else "",
                _met(q is not None and q["seconds"] <= TARGETS["query_top100_3m_s"]) if full else "",
            ),
            row(
                f"ranked batch of {settings.ranked_batch} (s)",
                f"≤ {TARGETS['ranked_batch_500_3m_s']:.0f} at 3M",
                f"{rb['seconds']:.1f}" if rb is not None else "",
                _met(rb is not None and rb["seconds"] <= TARGETS["ranked_batch_500_3m_s"]) if full else "",
            ),
            *(
                row(
                    f"{what}, {name} pool (s)",
                    f"≤ {TARGETS[key]:.0f} at 3M",
                    f"{hit['seconds']:.1f}" if hit is not None else "",
                    _met(hit is not None and hit["seconds"] <= TARGETS[key]) if full else "",
                )
                for name in settings.query_alternatives
                if name in settings.alternatives
                for what, key, hit in (
                    (
                        f"query, exact top-{settings.top_k}",
                        "query_top100_3m_s",
                        _get(table, "query top-k", f"project (Spark, {name}, 2nd)", size),
                    ),
                    (
                        f"ranked batch of {settings.ranked_batch}",
                        "ranked_batch_500_3m_s",
                        _get(table, "ranked batch", f"project (Spark, {name})", size),
                    ),
                )
            ),
            row(
                "peak memory, driver Python (GiB)",
                f"≤ {TARGETS['peak_driver_gib']:.1f}",
                f"{driver:.2f}" if pd.notna(driver) else "",
                _met(pd.notna(driver) and driver <= TARGETS["peak_driver_gib"]),
            ),
            row(
                "peak memory, process tree (GiB)",
                f"≤ {TARGETS['peak_memory_gib']:.0f}",
                f"{peak:.2f}" if pd.notna(peak) else "",
                _met(pd.notna(peak) and peak <= TARGETS["peak_memory_gib"]),
            ),
        ]
    return pd.DataFrame(out)


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def markdown(table: pd.DataFrame, summary: pd.DataFrame, meta: dict) -> str:
    detail = table.copy()
    detail["seconds"] = detail["seconds"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    for col in ("peak_total_gib", "peak_jvm_gib", "peak_driver_python_gib", "peak_python_workers_gib"):
        detail[col] = detail[col].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
    detail["pool_docs"] = detail["pool_docs"].map(lambda v: f"{int(v):,}")
    detail["note"] = detail["note"].fillna("")
    cols = [
        "operation",
        "implementation",
        "pool_docs",
        "seconds",
        "status",
        "peak_total_gib",
        "peak_jvm_gib",
        "peak_driver_python_gib",
        "peak_python_workers_gib",
        "load_before",
        "load_during",
        "note",
    ]
    for col in ("load_before", "load_during"):
        if col not in detail:
            detail[col] = None
        detail[col] = detail[col].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.1f}")
    la = meta["load_average_before"]
    return (
        f"Run took {meta['total_seconds'] / 60:.1f} min; load average before the run "
        f"{la[0]:.1f}/{la[1]:.1f}/{la[2]:.1f} (1/5/15 min) on {meta['machine']['nproc']} cores.\n\n"
        f"Rows with status *measured (loaded)* were taken above a load of {LOADED_PER_CORE} per core: "
        "not the published figure (loaded = yes in the target table).\n\n"
        "**Against the targets**\n\n"
        + markdown_table(summary.assign(pool=summary["pool"].map(lambda v: f"{v:,}")).to_dict("records"))
        + "\n**Every measurement** (peak RSS in GiB of the process tree during that step)\n\n"
        + markdown_table(detail[cols].to_dict("records"))
        + "\n![throughput](results/throughput.png)\n"
    )


def plot(table: pd.DataFrame, path: Path) -> None:
    """Left: seconds per operation and implementation at each pool size (log scale;
    hatched = extrapolated). Right: peak memory of each measured step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = table[table["seconds"].notna() & (table["operation"] != "load pool")].copy()
    ok["label"] = ok["operation"] + "\n" + ok["implementation"].str.replace(" (", "\n(", regex=False)
    sizes = sorted(
        ok.loc[ok["status"] != "measured", "pool_docs"].unique().tolist()
        + ok.loc[ok["implementation"].str.startswith("project"), "pool_docs"].unique().tolist()
    )
    sizes = sorted(set(sizes))
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5), constrained_layout=True)
    labels = list(dict.fromkeys(ok["label"]))
    width = 0.8 / max(1, len(sizes))
    for j, size in enumerate(sizes):
        part = ok[ok["pool_docs"] == size].drop_duplicates("label", keep="last").set_index("label")
        xs = [i + j * width for i, lab in enumerate(labels) if lab in part.index]
        vals = [part.loc[lab, "seconds"] for lab in labels if lab in part.index]
        hatches = ["//" if part.loc[lab, "status"] == "extrapolated" else "" for lab in labels if lab in part.index]
        bars = axes[0].bar(xs, vals, width=width, label=f"{size:,} docs")
        for bar, hatch in zip(bars, hatches):
            bar.set_hatch(hatch)
    axes[0].set_yscale("log")
    axes[0].set_xticks([i + width * (len(sizes) - 1) / 2 for i in range(len(labels))])
    axes[0].set_xticklabels(labels, fontsize=7)
    axes[0].set_ylabel("seconds (log)")
    axes[0].axhline(TARGETS["query_top100_3m_s"], color="grey", linestyle=":", linewidth=1)
    axes[0].axhline(TARGETS["ranked_batch_500_3m_s"], color="grey", linestyle="--", linewidth=1)
    axes[0].legend(title="pool (hatched = extrapolated)", fontsize=8)
    axes[0].set_title("time per step; dotted: 15 s query target, dashed: 60 s ranked-batch target")
    mem = table[table["peak_total_gib"].notna() & (table["status"] != "extrapolated")]
    mem = mem.drop_duplicates(["operation", "implementation", "pool_docs"], keep="last")
    names = [f"{r.operation} | {r.implementation} | {int(r.pool_docs):,}" for r in mem.itertuples()]
    y = np.arange(len(mem))
    left = np.zeros(len(mem))
    for col, name in (
        ("peak_jvm_gib", "JVM"),
        ("peak_driver_python_gib", "driver Python"),
        ("peak_python_workers_gib", "Python workers"),
    ):
        vals = mem[col].fillna(0).to_numpy()
        axes[1].barh(y, vals, left=left, label=name)
        left += vals
    axes[1].axvline(TARGETS["peak_memory_gib"], color="crimson", linestyle=":", label="6 GiB target")
    axes[1].set_yticks(y)
    axes[1].set_yticklabels(names, fontsize=7)
    axes[1].invert_yaxis()
    axes[1].set_xlabel("peak RSS (GiB; parts peak at different instants)")
    axes[1].legend(fontsize=8)
    axes[1].set_title("peak memory per step")
    fig.suptitle("Throughput on 2 cores (Spark local[2]) vs the seed recipe and plain modAL")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(table, summary, meta, results_dir: Path, readme: Path | None) -> list[Path]:
    files = [
        results_dir / "throughput.csv",
        results_dir / "throughput_targets.csv",
        results_dir / "throughput.json",
        results_dir / "throughput.md",
        results_dir / "throughput.png",
    ]
    table.to_csv(files[0], index=False, float_format="%.6g")
    summary.to_csv(files[1], index=False)
    write_json(files[2], meta)
    text = markdown(table, summary, meta)
    files[3].write_text(text)
    plot(table, files[4])
    if readme is not None:
        replace_section(readme, "throughput", text)
    return files


def rebuild(results_dir: Path = RESULTS_DIR, readme: Path | None = None) -> pd.DataFrame:
    """Re-derive the target table, markdown and plot from ``throughput.csv`` and
    ``throughput.json`` (no measuring). A step's total peak is capped at the sum of its
    JVM, driver and worker peaks, which leaves out short-lived JVM forks (see
    :class:`bench.common.PeakRSS`) in results written before they were excluded."""
    import json

    results_dir = Path(results_dir)
    table = pd.read_csv(results_dir / "throughput.csv")
    meta = json.loads((results_dir / "throughput.json").read_text())
    parts = table[["peak_jvm_gib", "peak_driver_python_gib", "peak_python_workers_gib"]].sum(axis=1, min_count=1)
    table["peak_total_gib"] = np.fmin(table["peak_total_gib"], parts)
    settings = ThroughputSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["settings"].items()})
    summary = target_table(table, settings)
    write_outputs(table, summary, meta, results_dir, readme)
    return summary
