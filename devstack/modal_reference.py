"""The reference the Spark query is tested against: modAL itself, single process.

Not part of the product: the tests and the throughput benchmark use it to check that
``al_tasks.ml.query`` picks exactly what modAL picks on the same pool.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from al_tasks.ml.query import top_k_order
from al_tasks.ml.strategies import RandomSampling


class ModalView:
    """What modAL's functions need from a learner: predict_proba and X_training."""

    on_transformed = False

    def __init__(self, model, X_training):
        self.model = model
        self.X_training = X_training

    def predict_proba(self, X, **kwargs):
        return self.model.predict_proba(X)


def query_in_memory(
    model,
    X_pool: sp.csr_matrix,
    pool_ids: np.ndarray,
    strategy: str,
    k: int,
    X_labelled: sp.csr_matrix | None = None,
    seed: int = 0,
) -> np.ndarray:
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
        view = ModalView(model, X_labelled if X_labelled is not None and X_labelled.shape[0] else None)
        idx, _ = uncertainty_batch_sampling(view, X_pool, n_instances=k)
        return pool_ids[np.asarray(idx)]
    fn = {"uncertainty": uncertainty_sampling, "margin": margin_sampling, "entropy": entropy_sampling}[strategy]
    result = fn(model, X_pool, n_instances=k)
    idx = result[0] if isinstance(result, tuple) else result
    return np.sort(pool_ids[np.asarray(idx)])
