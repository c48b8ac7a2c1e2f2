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
balanced_      margin, with the batch spread over the       -- (small-text's
margin         predicted classes, rarest labelled first     ClassBalancer idea)
badge          k-means++ seeding on the gradient            -- (Ash et al. 2020)
               embeddings (p - onehot(y_hat)) (x) x
=============  ===========================================  ==========================

Strategies with ``reranks = True`` need more than one score per item: Spark returns
their candidate set (the ``ranked_batch_candidates`` items with the best
:meth:`QueryStrategy.score`) and the driver picks the batch from it with
:func:`ranked_batch`, :func:`class_balanced` or :func:`badge`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.stats import entropy as _entropy

from al_tasks.config import STRATEGY_NAMES


class QueryStrategy:
    """Base class: ``score(proba, ids) -> scores`` (higher = query first).

    ``seed`` is used by the randomised strategies (``random``, ``badge``) only;
    ``reranks`` says whether the batch is picked from a candidate set on the driver.
    """

    name = "base"
    reranks = False

    def __init__(self, seed: int = 0):
        self.seed = seed

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
    reranks = True


class BalancedMarginSampling(MarginSampling):
    """Scores like margin; :func:`class_balanced` then spreads the batch over the
    predicted classes of a candidate set, rarest labelled class first.
    """

    name = "balanced_margin"
    reranks = True


class BadgeSampling(UncertaintySampling):
    """Candidates by uncertainty; :func:`badge` then picks a diverse, uncertain batch
    by k-means++ seeding on gradient embeddings (seeded by ``seed``).
    """

    name = "badge"
    reranks = True


STRATEGIES = {
    cls.name: cls
    for cls in (
        UncertaintySampling,
        MarginSampling,
        EntropySampling,
        RandomSampling,
        RankedBatchSampling,
        BalancedMarginSampling,
        BadgeSampling,
    )
}
assert set(STRATEGIES) == set(STRATEGY_NAMES), "LoopConfig's strategy choices and the classes must agree"


def get_strategy(name: str, seed: int = 0) -> QueryStrategy:
    """The strategy called ``name`` (``seed`` is used by ``random`` and ``badge`` only)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown query strategy {name!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](seed)


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


# ----------------------------------------------------------------------------- class-balanced margin
def balanced_quotas(predicted: np.ndarray, class_counts: np.ndarray, n: int) -> np.ndarray:
    """How many of a batch of ``n`` each predicted class gets (small-text's ClassBalancer idea).

    The rule: the batch fills the labelled set up towards equal class counts. Slot by
    slot, the next one goes to the class with the fewest labels so far (labelled count
    plus slots already given to it) among the classes that still have candidates
    predicted as them; ties go to the class listed first. A class with no candidate
    left drops out, so its share flows to the next-rarest class, and the batch is full
    whenever there are ``n`` candidates. Unlike small-text, ties are not broken at
    random: the same pool and model always give the same batch.

    Parameters
    ----------
    predicted : int class index of each candidate, shape (c,)
    class_counts : labels per class in the training set, shape (n_classes,)
    n : batch size

    Returns
    -------
    int64 quotas per class, shape (n_classes,), summing to ``min(n, c)``
    """
    available = np.bincount(predicted, minlength=len(class_counts))
    quotas = np.zeros(len(class_counts), dtype=np.int64)
    level = np.asarray(class_counts, dtype=np.int64).copy()
    for _ in range(min(n, int(available.sum()))):
        open_classes = np.flatnonzero(quotas < available)
        chosen = open_classes[np.argmin(level[open_classes])]
        quotas[chosen] += 1
        level[chosen] += 1
    return quotas


def class_balanced(
    scores: np.ndarray, ids: np.ndarray, predicted: np.ndarray, class_counts: np.ndarray, n: int
) -> np.ndarray:
    """Class-balanced pick of ``n`` candidates: each class's quota (:func:`balanced_quotas`)
    filled with its best-scored candidates (ties by smaller id).

    Parameters
    ----------
    scores : strategy score of each candidate (margin: higher = closer call), shape (c,)
    ids : int64 id of each candidate, shape (c,)
    predicted : int predicted class index of each candidate, shape (c,)
    class_counts : labels per class in the training set, shape (n_classes,)
    n : batch size

    Returns
    -------
    positions into the candidates, best score first (ties by id), shape (min(n, c),)
    """
    quotas = balanced_quotas(predicted, class_counts, n)
    picked = []
    for cls in np.flatnonzero(quotas):
        members = np.flatnonzero(predicted == cls)
        best_first = members[np.lexsort((ids[members], -scores[members]))]
        picked.append(best_first[: quotas[cls]])
    chosen = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    return chosen[np.lexsort((ids[chosen], -scores[chosen]))].astype(np.int64)


# ----------------------------------------------------------------------------- BADGE
#: BADGE: squared distances below this share of the largest squared gradient norm are 0.
DUPLICATE_TOLERANCE = 1e-10


def badge(proba: np.ndarray, X: sp.csr_matrix, ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """BADGE for logistic regression (Ash et al. 2020): k-means++ seeding on gradient
    embeddings, exact over the candidates.

    The gradient of the log loss at the predicted label with respect to the weights
    is ``g = (p - onehot(y_hat)) (x) x``: n_classes x n_features wide, far too wide to
    build for a pool. It is never built: with ``a = p - onehot(y_hat)``,
    ``<g_i, g_j> = <a_i, a_j> <x_i, x_j>``, so every squared distance needs one sparse
    product of feature rows and a tiny dense one. As in the BADGE paper's code, the
    first centre is the largest gradient (ties: smaller id), each next one is drawn
    with probability proportional to its squared distance to the nearest centre so
    far, from ``numpy.random.default_rng(seed)`` (one ``random()`` per draw, looked up
    in the cumulative distances). Squared distances below ``DUPLICATE_TOLERANCE`` times
    the largest squared gradient norm count as 0 (duplicates; rounding would otherwise
    decide), and when every remaining distance is 0 the next candidate in the given
    order is taken.

    Parameters
    ----------
    proba : class probabilities of the candidates, shape (c, n_classes)
    X : CSR features of the candidates, shape (c, n_features)
    ids : int64 ids of the candidates, shape (c,)
    n : batch size
    seed : random state of the draws

    Returns
    -------
    positions into the candidates, in pick order, shape (min(n, c),)
    """
    c = X.shape[0]
    n = min(n, c)
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    a = np.asarray(proba, dtype=np.float64).copy()
    a[np.arange(c), a.argmax(axis=1)] -= 1.0
    a_sq = (a * a).sum(axis=1)
    x_sq = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    g_sq = a_sq * x_sq
    first = int(np.lexsort((ids, -g_sq))[0])
    picked = [first]
    nearest = _gradient_sq_distances(a, X, g_sq, first)
    rng = np.random.default_rng(seed)
    tolerance = DUPLICATE_TOLERANCE * float(g_sq.max())
    while len(picked) < n:
        nearest[picked] = 0.0
        nearest[nearest <= tolerance] = 0.0
        cumulative = np.cumsum(nearest)
        if cumulative[-1] > 0:
            nxt = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
        else:
            nxt = int(np.flatnonzero(np.isin(np.arange(c), picked, invert=True))[0])
        picked.append(nxt)
        nearest = np.minimum(nearest, _gradient_sq_distances(a, X, g_sq, nxt))
    return np.asarray(picked, dtype=np.int64)


def _gradient_sq_distances(a: np.ndarray, X: sp.csr_matrix, g_sq: np.ndarray, row: int) -> np.ndarray:
    """||g_i - g_row||^2 for every candidate i, from the implicit embeddings (>= 0)."""
    x_dots = np.asarray((X @ X[row].T).todense(), dtype=np.float64).ravel()
    return np.maximum(g_sq + g_sq[row] - 2.0 * (a @ a[row]) * x_dots, 0.0)
