"""Single-process references of the class-aware and diverse strategies.

Not part of the product: the tests check that ``al_tasks.ml.query`` (Spark candidate
set, then :func:`al_tasks.ml.strategies.class_balanced` / :func:`~al_tasks.ml.strategies.badge`
on the driver) picks exactly what these straightforward versions pick on the same
candidates. They are written differently on purpose:

* balanced margin takes one item at a time (the best remaining candidate of the
  rarest class that still has one) instead of computing quotas first;
* BADGE builds the gradient embeddings explicitly, ``(p - onehot(y_hat)) (x) x`` as a
  sparse (c, n_classes * n_features) matrix, and recomputes each candidate's distance to
  every centre with scikit-learn at each step instead of using inner-product identities
  and an incremental minimum. Only the random draw and the tolerance under which a
  distance counts as 0 (one ``random()`` of
  ``numpy.random.default_rng(seed)`` per centre, looked up in the cumulative squared
  distances) are shared, since that is what "the same random_state" means.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def balanced_margin_reference(proba: np.ndarray, ids: np.ndarray, class_counts: np.ndarray, n: int) -> np.ndarray:
    """Ids class-balanced margin picks from candidates with probabilities ``proba``
    (shape (c, n_classes)), sorted; ``class_counts``: training labels per class.
    """
    top2 = -np.sort(-proba, axis=1)[:, :2]
    margin = top2[:, 0] - top2[:, 1]
    predicted = proba.argmax(axis=1)
    labelled = np.asarray(class_counts, dtype=np.int64).copy()
    remaining = {c: sorted(np.flatnonzero(predicted == c), key=lambda i: (margin[i], ids[i])) for c in set(predicted)}
    chosen = []
    while len(chosen) < n and any(remaining.values()):
        rarest = min((c for c, rows in remaining.items() if rows), key=lambda c: (labelled[c], c))
        chosen.append(remaining[rarest].pop(0))
        labelled[rarest] += 1
    return np.sort(ids[chosen])


def gradient_embedding(proba: np.ndarray, X: sp.csr_matrix) -> sp.csr_matrix:
    """BADGE's embedding of logistic regression, built explicitly: row i is
    ``(p_i - onehot(argmax p_i)) (x) x_i``, shape (c, n_classes * n_features).
    """
    a = np.asarray(proba, dtype=np.float64) - np.eye(proba.shape[1])[proba.argmax(axis=1)]
    X = sp.csr_matrix(X, dtype=np.float64)
    return sp.hstack([X.multiply(a[:, [k]]) for k in range(a.shape[1])], format="csr")


def badge_reference(proba: np.ndarray, X: sp.csr_matrix, ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Ids BADGE picks from the candidates, in pick order (k-means++ seeding)."""
    from sklearn.metrics import pairwise_distances

    from al_tasks.ml.strategies import DUPLICATE_TOLERANCE

    G = gradient_embedding(proba, X)
    norms = np.sqrt(np.asarray(G.multiply(G).sum(axis=1)).ravel())
    tolerance = DUPLICATE_TOLERANCE * float(norms.max()) ** 2
    centres = [min(range(len(ids)), key=lambda i: (-norms[i], ids[i]))]
    rng = np.random.default_rng(seed)
    while len(centres) < min(n, len(ids)):
        d2 = pairwise_distances(G, G[centres], metric="euclidean").min(axis=1) ** 2
        d2[centres] = 0.0
        d2[d2 <= tolerance] = 0.0
        cumulative = np.cumsum(d2)
        if cumulative[-1] > 0:
            centres.append(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")))
        else:
            centres.append(next(i for i in range(len(ids)) if i not in centres))
    return ids[np.asarray(centres)]
