"""Query strategies: class probabilities to a score, higher = more worth labelling.

Small interchangeable classes (as in small-text), with modAL's definitions:

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

:func:`ranked_batch` is the re-ranking step of ranked batch, run on a candidate set.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import entropy as _entropy

from al_tasks.config import STRATEGY_NAMES


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


STRATEGIES = {
    cls.name: cls for cls in (UncertaintySampling, MarginSampling, EntropySampling, RandomSampling, RankedBatchSampling)
}
assert set(STRATEGIES) == set(STRATEGY_NAMES), "LoopConfig's strategy choices and the classes must agree"


def get_strategy(name: str, seed: int = 0) -> QueryStrategy:
    """The strategy called ``name`` (``seed`` is used by ``random`` only)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown query strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return RandomSampling(seed) if name == "random" else STRATEGIES[name]()


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
