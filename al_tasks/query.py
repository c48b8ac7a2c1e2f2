"""Query: pick the pool items most worth labelling.

Strategies are small interchangeable classes (as in small-text); each turns class
probabilities into a score where *higher means more worth labelling*, with the same
definitions as modAL:

=============  ===========================================  ==========================
name           score                                        modAL equivalent
=============  ===========================================  ==========================
uncertainty    1 - max_c p(c|x)                             uncertainty_sampling
margin         -(p_top1 - p_top2)                           margin_sampling
entropy        -sum_c p log p                               entropy_sampling
random         a seeded hash of the id (the baseline)       --
ranked_batch   uncertainty + distance to the labelled set,  batch.uncertainty_batch_sampling
               greedily (Cardoso et al. 2017)
=============  ===========================================  ==========================

Scoring runs over the pool with Spark (``mapInArrow``, model broadcast): each partition
keeps its own top-k, the driver merges them, so the result is the **exact global
top-k** (ties broken by smaller id), unlike a per-chunk top fraction. Ranked batch
needs pairwise distances, so it runs on the driver over a candidate set: the
``ranked_batch_candidates`` most uncertain pool items (at least 5x the batch).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from scipy.stats import entropy as _entropy

from al_tasks.config import LoopConfig
from al_tasks.featurize import FeatureSet, load_features


# --------------------------------------------------------------------------- strategies
class QueryStrategy:
    """Base class: ``score(proba, ids) -> scores`` (higher = query first)."""

    name = "base"

    def score(self, proba: np.ndarray, ids: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class UncertaintySampling(QueryStrategy):
    name = "uncertainty"

    def score(self, proba, ids):
        return 1.0 - proba.max(axis=1)


class MarginSampling(QueryStrategy):
    name = "margin"

    def score(self, proba, ids):
        if proba.shape[1] == 1:
            return np.zeros(len(proba))
        top2 = np.partition(-proba, 1, axis=1)
        return top2[:, 0] - top2[:, 1]  # = -(p1 - p2)


class EntropySampling(QueryStrategy):
    name = "entropy"

    def score(self, proba, ids):
        return _entropy(proba.T)


class RandomSampling(QueryStrategy):
    """Uniform random sample, reproducible and independent of partitioning."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def score(self, proba, ids):
        # splitmix64 of (id, seed): a uniform, order-free pseudo-random number per id.
        with np.errstate(over="ignore"):
            z = np.asarray(ids, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(self.seed + 1)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            z = z ^ (z >> np.uint64(31))
        return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class RankedBatchSampling(UncertaintySampling):
    """Scores like uncertainty; :func:`ranked_batch` then re-ranks a candidate set."""

    name = "ranked_batch"


STRATEGIES = {cls.name: cls for cls in (UncertaintySampling, MarginSampling, EntropySampling, RandomSampling, RankedBatchSampling)}


def get_strategy(name: str, seed: int = 0) -> QueryStrategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown query strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return RandomSampling(seed) if name == "random" else STRATEGIES[name]()


# ----------------------------------------------------------------------------- top-k
def top_k_order(scores: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k best rows: score descending, then id ascending. Exact."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < len(scores):
        # Everything strictly above the k-th score is in; ties at the boundary are
        # settled by id, so the result never depends on partitioning or input order.
        kth = np.partition(-scores, k - 1)[k - 1]
        keep = np.flatnonzero(-scores <= kth)
    else:
        keep = np.arange(len(scores))
    order = np.lexsort((ids[keep], -scores[keep]))
    return keep[order[:k]]


def ranked_batch(uncertainty: np.ndarray, X_candidates: sp.csr_matrix, X_labelled: sp.csr_matrix, n: int) -> np.ndarray:
    """Ranked batch-mode selection (Cardoso et al.), the same picks as modAL's.

    modAL recomputes distances from every candidate to the whole (growing) labelled
    set at each step; this keeps each candidate's distance to its nearest labelled or
    already-picked item and updates it with the newly picked one only, so a batch of b
    from c candidates costs O(b * c) distance evaluations instead of O(b * c * labelled).

    Parameters
    ----------
    uncertainty : shape (c,), modAL's classifier_uncertainty of each candidate
    X_candidates : CSR, shape (c, n_features)
    X_labelled : CSR, shape (l, n_features); may have 0 rows (cold start)
    n : batch size

    Returns
    -------
    positions into the candidates, in pick order, shape (min(n, c),)
    """
    from sklearn.metrics import pairwise_distances_argmin_min

    c = X_candidates.shape[0]
    n = min(n, c)
    sq_norms = np.asarray(X_candidates.multiply(X_candidates).sum(axis=1)).ravel()
    picked: list[int] = []
    available = np.ones(c, dtype=bool)
    n_labelled = X_labelled.shape[0]
    if n_labelled > 0:
        _, nearest = pairwise_distances_argmin_min(X_candidates, X_labelled, metric="euclidean")
        nearest = nearest.astype(np.float64)
    else:
        # modAL's cold start: the candidate with the least mean distance to the others.
        from sklearn.metrics import pairwise_distances

        first = int(np.argmin(pairwise_distances(X_candidates, metric="euclidean").mean(axis=1)))
        picked.append(first)
        available[first] = False
        n_labelled = 1
        nearest = _distances_to(X_candidates, sq_norms, first)
    while len(picked) < n:
        n_available = int(available.sum())
        alpha = n_available / (n_available + n_labelled)
        scores = alpha * (1 - 1 / (1 + nearest)) + (1 - alpha) * uncertainty
        scores = np.where(available, scores, -np.inf)
        best = int(np.argmax(scores))
        picked.append(best)
        available[best] = False
        n_labelled += 1
        nearest = np.minimum(nearest, _distances_to(X_candidates, sq_norms, best))
    return np.asarray(picked, dtype=np.int64)


def _distances_to(X: sp.csr_matrix, sq_norms: np.ndarray, row: int) -> np.ndarray:
    dots = np.asarray((X @ X[row].T).todense()).ravel()
    return np.sqrt(np.maximum(sq_norms + sq_norms[row] - 2 * dots, 0.0))


# ------------------------------------------------------------------------- query sets
@dataclasses.dataclass
class QueryResult:
    """A ranked query set.

    Attributes
    ----------
    items : DataFrame, one row per item, best first: ``rank`` (1..k), ``id`` (int64),
        ``predicted_label`` (str), ``confidence`` (max class probability), ``score``
        (the strategy's score; for ranked batch its uncertainty), ``strategy``, ``round``
        and, when texts were given, ``text``
    pool_size : int, items the query chose from
    seconds : float
    candidates : int, rows the driver ranked (ranked batch), else k
    """

    items: pd.DataFrame
    pool_size: int
    seconds: float
    candidates: int


def lists_to_csr(indices: pa.Array, values: pa.Array, num_features: int) -> sp.csr_matrix:
    """Arrow list<int32> indices and list<double> values -> CSR float32."""
    if isinstance(indices, pa.ChunkedArray):
        indices, values = indices.combine_chunks(), values.combine_chunks()
    offsets = indices.offsets.to_numpy()
    start = offsets[0]
    data = values.values.slice(start, offsets[-1] - start).to_numpy().astype(np.float32, copy=False)
    cols = indices.values.slice(start, offsets[-1] - start).to_numpy().astype(np.int32, copy=False)
    return sp.csr_matrix((data, cols, offsets - start), shape=(len(indices), num_features))


def _feature_schema():
    from pyspark.sql.types import ArrayType, ByteType, DoubleType, IntegerType, LongType, StructField, StructType

    vector = StructType([
        StructField("type", ByteType()), StructField("size", IntegerType()),
        StructField("indices", ArrayType(IntegerType())), StructField("values", ArrayType(DoubleType())),
    ])
    return StructType([StructField("id", LongType()), StructField("features", vector)])


def score_pool_top_k(
    feature_set: FeatureSet,
    model,
    strategy: QueryStrategy,
    k: int,
    exclude_ids: np.ndarray,
    spark,
) -> pd.DataFrame:
    """Exact global top-k of ``strategy`` over the pool, scored with Spark.

    The pool is every featurized id not in ``exclude_ids``. Returns a DataFrame (id,
    predicted, confidence, score) of at most k rows, best first; ``predicted`` is the
    class index into ``model.classes_``.
    """
    sc = spark.sparkContext
    model_bc = sc.broadcast(model)
    excluded_bc = sc.broadcast(np.unique(np.asarray(exclude_ids, dtype=np.int64)))
    num_features = feature_set.num_features

    def partition_top_k(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        clf, excluded = model_bc.value, excluded_bc.value
        keep_ids = np.zeros(0, np.int64)
        keep_pred = np.zeros(0, np.int32)
        keep_conf = np.zeros(0, np.float64)
        keep_score = np.zeros(0, np.float64)
        for batch in batches:
            ids = batch.column(0).to_numpy()
            in_pool = ~np.isin(ids, excluded, assume_unique=False)
            if not in_pool.any():
                continue
            X = lists_to_csr(batch.column(1), batch.column(2), num_features)
            if not in_pool.all():
                ids, X = ids[in_pool], X[np.flatnonzero(in_pool)]
            proba = clf.predict_proba(X)
            ids_all = np.concatenate([keep_ids, ids])
            score_all = np.concatenate([keep_score, strategy.score(proba, ids)])
            pred_all = np.concatenate([keep_pred, proba.argmax(axis=1).astype(np.int32)])
            conf_all = np.concatenate([keep_conf, proba.max(axis=1)])
            best = top_k_order(score_all, ids_all, k)
            keep_ids, keep_pred, keep_conf, keep_score = ids_all[best], pred_all[best], conf_all[best], score_all[best]
        yield pa.RecordBatch.from_arrays(
            [pa.array(keep_ids, pa.int64()), pa.array(keep_pred, pa.int32()),
             pa.array(keep_conf, pa.float64()), pa.array(keep_score, pa.float64())],
            names=["id", "predicted", "confidence", "score"],
        )

    features = spark.read.schema(_feature_schema()).parquet(*[str(p) for p in feature_set.feature_paths()])
    pool = features.selectExpr("id", "features.indices AS indices", "features.values AS `values`")
    partials = pool.mapInArrow(
        partition_top_k, "id long, predicted int, confidence double, score double"
    ).toArrow()
    merged = partials.to_pandas()
    order = top_k_order(merged["score"].to_numpy(), merged["id"].to_numpy(), k)
    model_bc.unpersist()
    excluded_bc.unpersist()
    return merged.iloc[order].reset_index(drop=True)


def query(
    feature_set: FeatureSet,
    model,
    config: LoopConfig,
    *,
    exclude_ids: np.ndarray,
    labelled_ids: np.ndarray | None = None,
    round_number: int = 0,
    texts: pd.DataFrame | None = None,
    spark=None,
    log=print,
) -> QueryResult:
    """Choose ``config.batch_count(pool)`` items with ``config.strategy``.

    Parameters
    ----------
    exclude_ids : int64 ids not in the pool (labelled, evaluation set, ...)
    labelled_ids : ids whose features ranked batch measures distance to (default:
        ``exclude_ids``)
    texts : optional DataFrame (id, text) to attach the narratives
    """
    from al_tasks.spark import spark_session

    started = time.perf_counter()
    spark = spark or spark_session(config)
    strategy = get_strategy(config.strategy, seed=config.seed + round_number)
    exclude_ids = np.unique(np.asarray(exclude_ids, dtype=np.int64))
    all_ids = feature_set.ids()
    pool_size = int(len(all_ids) - np.isin(all_ids, exclude_ids).sum())
    k = min(config.batch_count(pool_size), pool_size)
    fetch = k
    if strategy.name == "ranked_batch":
        fetch = min(pool_size, max(config.ranked_batch_candidates, 5 * k))
    log(f"query: {strategy.name}, {k} of a pool of {pool_size:,} (scoring with Spark, {fetch} candidates)")
    top = score_pool_top_k(feature_set, model, strategy, fetch, exclude_ids, spark)
    if strategy.name == "ranked_batch" and len(top):
        labelled_ids = exclude_ids if labelled_ids is None else np.asarray(labelled_ids, dtype=np.int64)
        _, X_cand = load_features(feature_set, top["id"].to_numpy())
        _, X_lab = load_features(feature_set, labelled_ids) if len(labelled_ids) else (None, sp.csr_matrix((0, feature_set.num_features)))
        order = ranked_batch(top["score"].to_numpy(), X_cand, X_lab, k)
        top = top.iloc[order].reset_index(drop=True)
    top = top.head(k)
    classes = np.asarray(model.classes_, dtype=object)
    items = pd.DataFrame({
        "rank": np.arange(1, len(top) + 1),
        "id": top["id"].to_numpy(),
        "predicted_label": classes[top["predicted"].to_numpy()] if len(top) else np.array([], dtype=object),
        "confidence": top["confidence"].to_numpy(),
        "score": top["score"].to_numpy(),
        "strategy": strategy.name,
        "round": round_number,
    })
    if texts is not None:
        items = items.merge(texts[["id", "text"]], on="id", how="left")
    seconds = time.perf_counter() - started
    log(f"query: chose {len(items)} items in {seconds:.1f}s")
    return QueryResult(items=items, pool_size=pool_size, seconds=seconds, candidates=len(top) if strategy.name != "ranked_batch" else fetch)


# ------------------------------------------------------------ single-process reference
class _ModalView:
    """What modAL's functions need from a learner: predict_proba and X_training."""

    on_transformed = False

    def __init__(self, model, X_training):
        self.model = model
        self.X_training = X_training

    def predict_proba(self, X, **kwargs):
        return self.model.predict_proba(X)


def query_in_memory(model, X_pool: sp.csr_matrix, pool_ids: np.ndarray, strategy: str, k: int,
                    X_labelled: sp.csr_matrix | None = None, seed: int = 0) -> np.ndarray:
    """The same query with modAL itself, single process, pool in memory.

    The reference the Spark path is tested against, and benchmark baseline (b).
    Returns the chosen ids (ranked batch: in pick order; others: as a set, sorted).
    """
    from modAL.batch import uncertainty_batch_sampling
    from modAL.uncertainty import entropy_sampling, margin_sampling, uncertainty_sampling

    pool_ids = np.asarray(pool_ids)
    if strategy == "random":
        scores = RandomSampling(seed).score(None, pool_ids)
        return np.sort(pool_ids[top_k_order(scores, pool_ids, k)])
    if strategy == "ranked_batch":
        view = _ModalView(model, X_labelled if X_labelled is not None and X_labelled.shape[0] else None)
        idx, _ = uncertainty_batch_sampling(view, X_pool, n_instances=k)
        return pool_ids[np.asarray(idx)]
    fn = {"uncertainty": uncertainty_sampling, "margin": margin_sampling, "entropy": entropy_sampling}[strategy]
    result = fn(model, X_pool, n_instances=k)
    idx = result[0] if isinstance(result, tuple) else result
    return np.sort(pool_ids[np.asarray(idx)])
