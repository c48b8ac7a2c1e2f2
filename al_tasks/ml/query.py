"""Query: pick the pool items most worth labelling, exactly, over a pool of any size.

The pool is scored in parallel by Spark (``mapInArrow``, model broadcast): each
partition keeps its own top-k, the driver merges them, so the result is the **exact
global top-k** (ties broken by smaller id), unlike a per-chunk top fraction. Ranked
batch and BADGE need pairwise distances, balanced margin needs class quotas: they pick
on the driver from a candidate set, the ``ranked_batch_candidates`` pool items with the
best candidate score (at least 5x the batch), which Spark returns through the same
exact top-k. Strategies: :mod:`al_tasks.ml.strategies`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from al_tasks.config import LoopConfig
from al_tasks.ml.features import FeatureReads, FeatureSet, load_features
from al_tasks.ml.sparse import lists_to_csr
from al_tasks.ml.strategies import QueryStrategy, badge, class_balanced, get_strategy, ranked_batch

log = logging.getLogger(__name__)


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


@dataclasses.dataclass
class QueryResult:
    """A ranked query set.

    Attributes
    ----------
    items : DataFrame, one row per item, best first: ``rank`` (1..k), ``id`` (int64),
        ``predicted_label`` (str), ``confidence`` (max class probability), ``score``
        (the strategy's score; for ranked batch and badge the candidate's uncertainty, for
        balanced margin its margin score), ``strategy``, ``round``
    pool_size : int, items the query chose from
    seconds : float
    candidates : int, rows Spark returned (re-ranking strategies: the candidate set)
    feature_reads : FeatureReads, what the re-ranking read of the feature files (zeros
        for a strategy that does not re-rank or reads no vectors)
    """

    items: pd.DataFrame
    pool_size: int
    seconds: float
    candidates: int
    feature_reads: FeatureReads = dataclasses.field(default_factory=FeatureReads)


def _feature_schema():
    from pyspark.sql.types import ArrayType, ByteType, DoubleType, IntegerType, LongType, StructField, StructType

    vector = StructType(
        [
            StructField("type", ByteType()),
            StructField("size", IntegerType()),
            StructField("indices", ArrayType(IntegerType())),
            StructField("values", ArrayType(DoubleType())),
        ]
    )
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
            [
                pa.array(keep_ids, pa.int64()),
                pa.array(keep_pred, pa.int32()),
                pa.array(keep_conf, pa.float64()),
                pa.array(keep_score, pa.float64()),
            ],
            names=["id", "predicted", "confidence", "score"],
        )

    features = spark.read.schema(_feature_schema()).parquet(*[str(p) for p in feature_set.feature_paths()])
    pool = features.selectExpr("id", "features.indices AS indices", "features.values AS `values`")
    partials = pool.mapInArrow(partition_top_k, "id long, predicted int, confidence double, score double").toArrow()
    merged = partials.to_pandas()
    order = top_k_order(merged["score"].to_numpy(), merged["id"].to_numpy(), k)
    model_bc.unpersist()
    excluded_bc.unpersist()
    return merged.iloc[order].reset_index(drop=True)


def pool_ids(feature_set: FeatureSet, exclude_ids: np.ndarray) -> np.ndarray:
    """Every featurized id (corpus and pool additions) not in ``exclude_ids``, sorted."""
    return np.setdiff1d(feature_set.ids(), np.asarray(exclude_ids, dtype=np.int64))


def pool_count(feature_set: FeatureSet, exclude_ids: np.ndarray) -> int:
    """How many featurized ids are not in ``exclude_ids`` (ids are unique; no sorted copy of the pool)."""
    all_ids = feature_set.ids()
    excluded = np.unique(np.asarray(exclude_ids, dtype=np.int64))
    return len(all_ids) - int(np.count_nonzero(np.isin(excluded, all_ids)))


def candidate_count(config: LoopConfig, strategy: QueryStrategy, k: int, pool_size: int) -> int:
    """Rows Spark returns: ``k``, or for a re-ranking strategy the candidate set it picks from."""
    if not strategy.reranks:
        return k
    return min(pool_size, max(config.ranked_batch_candidates, 5 * k))


def rerank_ranked_batch(
    feature_set: FeatureSet, top: pd.DataFrame, labelled_ids: np.ndarray, k: int, reads: FeatureReads | None = None
) -> pd.DataFrame:
    """Ranked batch's greedy pick of ``k`` among the candidates ``top`` (pick order).

    The candidates' and the labelled items' vectors come from one pass over the feature
    files that keeps only those rows (``reads``, when given, records what was read).
    """
    candidate_ids = top["id"].to_numpy()
    labelled_ids = np.asarray(labelled_ids, dtype=np.int64)
    _, X_both = load_features(feature_set, np.concatenate([candidate_ids, labelled_ids]), reads=reads)
    X_candidates, X_labelled = X_both[: len(candidate_ids)], X_both[len(candidate_ids) :]
    order = ranked_batch(top["score"].to_numpy(), X_candidates, X_labelled, k)
    return top.iloc[order].reset_index(drop=True)


def model_class_counts(model) -> np.ndarray:
    """Training labels per class of ``model`` (``class_counts_``), shape (n_classes,);
    zeros for a model without them (then balanced margin spreads the batch evenly).
    """
    counts = getattr(model, "class_counts_", None)
    return np.zeros(len(model.classes_), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)


def rerank_balanced_margin(top: pd.DataFrame, model, k: int) -> pd.DataFrame:
    """Class-balanced margin's pick of ``k`` among the candidates ``top`` (best margin first)."""
    order = class_balanced(
        top["score"].to_numpy(), top["id"].to_numpy(), top["predicted"].to_numpy(), model_class_counts(model), k
    )
    return top.iloc[order].reset_index(drop=True)


def rerank_badge(
    feature_set: FeatureSet, top: pd.DataFrame, model, k: int, seed: int, reads: FeatureReads | None = None
) -> pd.DataFrame:
    """BADGE's pick of ``k`` among the candidates ``top`` (pick order); reads only the candidates' vectors."""
    ids, X_candidates = load_features(feature_set, top["id"].to_numpy(), reads=reads)
    order = badge(model.predict_proba(X_candidates), X_candidates, ids, k, seed)
    return top.iloc[order].reset_index(drop=True)


def rerank(
    strategy: QueryStrategy,
    feature_set: FeatureSet,
    top: pd.DataFrame,
    model,
    labelled_ids: np.ndarray,
    k: int,
    reads: FeatureReads | None = None,
) -> pd.DataFrame:
    """The batch of a re-ranking strategy, picked from its candidate set ``top``."""
    if strategy.name == "ranked_batch":
        return rerank_ranked_batch(feature_set, top, labelled_ids, k, reads=reads)
    if strategy.name == "balanced_margin":
        return rerank_balanced_margin(top, model, k)
    if strategy.name == "badge":
        return rerank_badge(feature_set, top, model, k, strategy.seed, reads=reads)
    raise ValueError(f"strategy {strategy.name!r} does not re-rank")


def query(
    feature_set: FeatureSet,
    model,
    config: LoopConfig,
    *,
    exclude_ids: np.ndarray,
    labelled_ids: np.ndarray | None = None,
    round_number: int = 0,
    spark=None,
) -> QueryResult:
    """Choose ``config.batch_count(pool)`` items with ``config.strategy``.

    Parameters
    ----------
    feature_set : the featurized pool (corpus and additions)
    model : fitted classifier with ``predict_proba`` and ``classes_``
    config : LoopConfig (strategy, batch_size, ranked_batch_candidates, seed)
    exclude_ids : int64 ids not in the pool (labelled, evaluation set, ...)
    labelled_ids : ids whose features ranked batch measures distance to (default ``exclude_ids``)
    round_number : seeds the random and badge strategies (``config.seed + round_number``),
        recorded in the items
    spark : SparkSession (default: one for ``config``)

    Returns
    -------
    QueryResult
    """
    from al_tasks.spark import spark_session

    started = time.perf_counter()
    spark = spark or spark_session(config)
    strategy = get_strategy(config.strategy, seed=config.seed + round_number)
    exclude_ids = np.unique(np.asarray(exclude_ids, dtype=np.int64))
    pool_size = pool_count(feature_set, exclude_ids)
    k = min(config.batch_count(pool_size), pool_size)
    fetch = candidate_count(config, strategy, k, pool_size)
    log.info(
        "query: %s, %s of a pool of %s (scoring with Spark, %s candidates)", strategy.name, k, f"{pool_size:,}", fetch
    )
    top = score_pool_top_k(feature_set, model, strategy, fetch, exclude_ids, spark)
    reads = FeatureReads()
    if strategy.reranks and len(top):
        labelled = exclude_ids if labelled_ids is None else np.asarray(labelled_ids, dtype=np.int64)
        top = rerank(strategy, feature_set, top, model, labelled, k, reads=reads)
    top = top.head(k)
    classes = np.asarray(model.classes_, dtype=object)
    items = pd.DataFrame(
        {
            "rank": np.arange(1, len(top) + 1),
            "id": top["id"].to_numpy(),
            "predicted_label": classes[top["predicted"].to_numpy()] if len(top) else np.array([], dtype=object),
            "confidence": top["confidence"].to_numpy(),
            "score": top["score"].to_numpy(),
            "strategy": strategy.name,
            "round": round_number,
        }
    )
    seconds = time.perf_counter() - started
    log.info("query: chose %s items in %.1fs", len(items), seconds)
    return QueryResult(items=items, pool_size=pool_size, seconds=seconds, candidates=fetch, feature_reads=reads)
