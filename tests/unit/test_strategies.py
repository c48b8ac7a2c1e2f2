"""The class-aware and diverse strategies' driver-side picks, on synthetic candidates.

The same picks on the real pool through the Spark path: tests/integration/test_tune_query.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from al_tasks.config import STRATEGY_NAMES, LoopConfig
from al_tasks.ml.strategies import STRATEGIES, badge, balanced_quotas, class_balanced, get_strategy
from devstack.query_reference import badge_reference, balanced_margin_reference, gradient_embedding


def candidates(c: int, n_classes: int, seed: int):
    """Random sparse rows (L2-normalised) and skewed class probabilities."""
    rng = np.random.default_rng(seed)
    X = sp.random(c, 300, density=0.05, random_state=seed, format="csr", dtype=np.float64)
    X = sp.csr_matrix(X.multiply(1 / np.sqrt(X.multiply(X).sum(axis=1) + 1e-12)))
    logits = rng.normal(size=(c, n_classes)) + np.linspace(2, 0, n_classes)
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ids = rng.permutation(10 * c)[:c].astype(np.int64) + 1000
    return proba, X, ids


def margin_score(proba):
    top2 = np.partition(-proba, 1, axis=1)
    return top2[:, 0] - top2[:, 1]


def test_new_strategies_are_selectable_by_name():
    assert {"balanced_margin", "badge"} <= set(STRATEGY_NAMES) == set(STRATEGIES)
    for name in ("balanced_margin", "badge"):
        assert LoopConfig(strategy=name).strategy == name
        assert get_strategy(name, seed=3).reranks and get_strategy(name, seed=3).seed == 3
    assert not get_strategy("margin").reranks


def test_quotas_fill_the_rarest_classes_first():
    # Labelled: 50 / 10 / 0; candidates predicted 0: 40, 1: 40, 2: 3.
    predicted = np.array([0] * 40 + [1] * 40 + [2] * 3)
    quotas = balanced_quotas(predicted, np.array([50, 10, 0]), 20)
    # Class 2 takes all 3 it has (0 -> 3), class 1 the rest (10 -> 27); class 0 none.
    assert quotas.tolist() == [0, 17, 3]
    # A batch larger than the gap to the majority spreads evenly once the counts meet.
    # (12, 10, 0) + (8, 9, 3) = (20, 19, 3)
    assert balanced_quotas(predicted, np.array([12, 10, 0]), 20).tolist() == [8, 9, 3]
    # Without training counts the batch spreads evenly; ties go to the first class.
    assert balanced_quotas(np.array([0, 0, 1, 1, 2]), np.zeros(3), 4).tolist() == [2, 1, 1]
    # Never more than the candidates.
    assert balanced_quotas(np.array([1, 1]), np.array([0, 5]), 10).tolist() == [0, 2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_class_balanced_equals_its_reference(seed):
    proba, _, ids = candidates(400, 5, seed)
    counts = np.array([120, 40, 20, 5, 0])
    scores = margin_score(proba)
    picked = class_balanced(scores, ids, proba.argmax(axis=1), counts, 50)
    assert sorted(ids[picked].tolist()) == balanced_margin_reference(proba, ids, counts, 50).tolist()
    assert (np.diff(scores[picked]) <= 0).all(), "best margin first"
    # Rare predicted classes are over-represented against plain margin's top 50.
    plain = np.lexsort((ids, -scores))[:50]
    rare = proba.argmax(axis=1) >= 3
    assert rare[picked].sum() > rare[plain].sum()


def test_gradient_embedding_identity():
    proba, X, _ = candidates(30, 4, 5)
    G = gradient_embedding(proba, X)
    a = proba - np.eye(4)[proba.argmax(axis=1)]
    expected = (a @ a.T) * (X @ X.T).toarray()
    np.testing.assert_allclose((G @ G.T).toarray(), expected, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badge_equals_its_reference(seed):
    proba, X, ids = candidates(300, 6, seed)
    picked = badge(proba, X, ids, 40, seed=seed)
    assert ids[picked].tolist() == badge_reference(proba, X, ids, 40, seed=seed).tolist()
    assert len(set(picked.tolist())) == 40
    # The same random state, the same batch; another one, another batch.
    assert badge(proba, X, ids, 40, seed=seed).tolist() == picked.tolist()
    assert badge(proba, X, ids, 40, seed=seed + 10).tolist() != picked.tolist()


def test_badge_handles_duplicates_and_small_pools():
    proba, X, ids = candidates(5, 3, 9)
    X = sp.csr_matrix(np.repeat(X[:1].toarray(), 5, axis=0))
    proba = np.repeat(proba[:1], 5, axis=0)
    picked = badge(proba, X, ids, 10, seed=0)
    assert sorted(picked.tolist()) == [0, 1, 2, 3, 4]
    assert ids[picked].tolist() == badge_reference(proba, X, ids, 10, seed=0).tolist()
