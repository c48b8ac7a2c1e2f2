"""Tuning and querying on the real CFPB sample.

The Spark query must pick exactly the ids single-process modAL picks on the same pool,
for every strategy; small labelled sets that miss classes must not break tuning.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from al_tasks.ml import features as features_module
from al_tasks.ml.features import FeatureReads, load_features
from al_tasks.ml.model import TextClassifier
from al_tasks.ml.query import query, score_pool_top_k, top_k_order
from al_tasks.ml.splits import stratified_split
from al_tasks.ml.strategies import get_strategy
from al_tasks.ml.tune import tune
from devstack.modal_reference import query_in_memory
from devstack.query_reference import badge_reference, balanced_margin_reference


@pytest.fixture(scope="module")
def pool(feature_set, seed_labels):
    ids, X = load_features(feature_set)
    in_pool = ~np.isin(ids, seed_labels["id"].to_numpy())
    return ids[in_pool], X[np.flatnonzero(in_pool)]


@pytest.mark.parametrize("strategy", ["uncertainty", "margin", "entropy", "random"])
def test_spark_query_equals_modal(strategy, core_config, feature_set, seed_model, seed_labels, pool, spark):
    cfg = core_config.with_overrides({"strategy": strategy, "batch_size": 100})
    result = query(feature_set, seed_model, cfg, exclude_ids=seed_labels["id"].to_numpy(), spark=spark)
    pool_ids, X_pool = pool
    expected = query_in_memory(seed_model, X_pool, pool_ids, strategy, 100, seed=cfg.seed)
    assert result.pool_size == len(pool_ids) == 8017 - 230
    assert sorted(result.items["id"].tolist()) == sorted(expected.tolist())
    assert result.items["rank"].tolist() == list(range(1, 101))
    assert (np.diff(result.items["score"].to_numpy()) <= 0).all(), "ranked best first"
    assert not set(result.items["id"]) & set(seed_labels["id"])


def test_ranked_batch_equals_modal_on_the_candidate_set(core_config, feature_set, seed_model, seed_labels, spark):
    cfg = core_config.with_overrides({"strategy": "ranked_batch", "batch_size": 60, "ranked_batch_candidates": 400})
    labelled = seed_labels["id"].to_numpy()
    result = query(feature_set, seed_model, cfg, exclude_ids=labelled, spark=spark)
    candidates = score_pool_top_k(feature_set, seed_model, get_strategy("uncertainty"), 400, labelled, spark)
    _, X_candidates = load_features(feature_set, candidates["id"].to_numpy())
    _, X_labelled = load_features(feature_set, labelled)
    expected = query_in_memory(
        seed_model, X_candidates, candidates["id"].to_numpy(), "ranked_batch", 60, X_labelled=X_labelled
    )
    assert result.items["id"].tolist() == expected.tolist()  # same items, same order
    assert result.candidates == 400


def test_ranked_batch_and_badge_read_only_the_rows_they_need(
    core_config, feature_set, seed_model, seed_labels, spark, monkeypatch
):
    # Batches far smaller than the pool (8,017 docs): the driver never holds more than
    # one batch of decoded vectors, keeps only the candidates' and labelled rows, and
    # reads the files once (not once for the candidates and again for the labelled).
    monkeypatch.setattr(features_module, "READ_BATCH_ROWS", 500)
    labelled = seed_labels["id"].to_numpy()
    cfg = core_config.with_overrides({"strategy": "ranked_batch", "batch_size": 60, "ranked_batch_candidates": 400})
    result = query(feature_set, seed_model, cfg, exclude_ids=labelled, spark=spark)
    reads = result.feature_reads
    assert reads.rows_kept == 400 + len(labelled) == 630
    assert 0 < reads.largest_batch_rows <= 500
    assert reads.rows_decoded <= feature_set.n_docs
    candidates = score_pool_top_k(feature_set, seed_model, get_strategy("uncertainty"), 400, labelled, spark)
    _, X_candidates = load_features(feature_set, candidates["id"].to_numpy())
    _, X_labelled = load_features(feature_set, labelled)
    expected = query_in_memory(
        seed_model, X_candidates, candidates["id"].to_numpy(), "ranked_batch", 60, X_labelled=X_labelled
    )
    assert result.items["id"].tolist() == expected.tolist()

    badge_cfg = cfg.with_overrides({"strategy": "badge", "batch_size": 40, "ranked_batch_candidates": 300})
    badge_reads = query(feature_set, seed_model, badge_cfg, exclude_ids=labelled, spark=spark).feature_reads
    assert badge_reads.rows_kept == 300 and 0 < badge_reads.largest_batch_rows <= 500
    # Plain top-k reads no vectors on the driver at all.
    margin_cfg = cfg.with_overrides({"strategy": "margin"})
    assert query(feature_set, seed_model, margin_cfg, exclude_ids=labelled, spark=spark).feature_reads == FeatureReads()


def test_load_features_by_id_in_small_batches_equals_the_whole_read(feature_set):
    all_ids, X_all = load_features(feature_set)
    rng = np.random.default_rng(3)
    # Shuffled, with a repeat: rows come back in the order asked for.
    wanted = np.concatenate([rng.choice(all_ids, 700, replace=False), all_ids[[5, 5]]])
    reads = FeatureReads()
    ids, X = load_features(feature_set, wanted, batch_rows=256, reads=reads)
    position = {int(i): n for n, i in enumerate(all_ids)}
    rows = [position[int(i)] for i in wanted]
    assert ids.tolist() == wanted.tolist()
    assert X.shape == (len(wanted), feature_set.num_features)
    assert (X_all[rows] != X).nnz == 0
    assert reads.rows_kept == 701 and reads.largest_batch_rows <= 256
    with pytest.raises(KeyError):
        load_features(feature_set, np.array([all_ids.max() + 1], dtype=np.int64))
    none_ids, none_X = load_features(feature_set, np.zeros(0, dtype=np.int64))
    assert len(none_ids) == 0 and none_X.shape == (0, feature_set.num_features)


@pytest.mark.parametrize("penalty", ["l1", "l2"])
def test_dense_coefficients_score_exactly_as_the_sparse_product(feature_set, seed_labels, penalty):
    labelled = seed_labels["id"].to_numpy()
    _, X_train = load_features(feature_set, labelled)
    model = TextClassifier(classes=sorted(seed_labels["label"].unique()), C=2.0, penalty=penalty)
    model.fit(X_train, seed_labels["label"].to_numpy(dtype=object))
    all_ids, X = load_features(feature_set)
    sparse_product = np.asarray((X @ model.coef_.T).toarray()) + model.intercept_
    assert np.array_equal(model.decision_function(X), sparse_product)  # bit for bit, not approximately
    # The dense copy is derived: not pickled (broadcasts stay small), rebuilt after a refit.
    restored = pickle.loads(pickle.dumps(model))
    assert "_coef_t_dense" not in vars(restored)
    assert np.array_equal(restored.decision_function(X), sparse_product)
    rest = np.flatnonzero(~np.isin(all_ids, labelled))[:300]
    model.fit(X[rest], np.resize(model.classes_, len(rest)))
    assert np.array_equal(model.decision_function(X), np.asarray((X @ model.coef_.T).toarray()) + model.intercept_)


def candidate_set(feature_set, model, labelled, scored_by: str, n: int, spark):
    """(ids, X, proba) of the ``n`` best pool items by ``scored_by``, as the reference sees them."""
    top = score_pool_top_k(feature_set, model, get_strategy(scored_by), n, labelled, spark)
    ids, X = load_features(feature_set, top["id"].to_numpy())
    return ids, X, model.predict_proba(X)


def test_balanced_margin_equals_its_reference(core_config, feature_set, seed_model, seed_labels, spark):
    cfg = core_config.with_overrides({"strategy": "balanced_margin", "batch_size": 60, "ranked_batch_candidates": 400})
    labelled = seed_labels["id"].to_numpy()
    result = query(feature_set, seed_model, cfg, exclude_ids=labelled, spark=spark)
    ids, _, proba = candidate_set(feature_set, seed_model, labelled, "margin", 400, spark)
    counts = seed_model.class_counts_
    assert counts.sum() == 230 and counts.tolist() == [
        int((seed_labels["label"] == c).sum()) for c in seed_model.classes_
    ]
    assert sorted(result.items["id"].tolist()) == balanced_margin_reference(proba, ids, counts, 60).tolist()
    assert result.candidates == 400 and len(result.items) == 60
    assert (np.diff(result.items["score"].to_numpy()) <= 0).all(), "best margin first"
    # Rarer labelled classes get a larger share than plain margin gives them.
    margin_cfg = cfg.with_overrides({"strategy": "margin"})
    plain = query(feature_set, seed_model, margin_cfg, exclude_ids=labelled, spark=spark)
    majority = seed_model.classes_[int(np.argmax(counts))]
    assert (result.items["predicted_label"] == majority).sum() < (plain.items["predicted_label"] == majority).sum()


def test_badge_equals_its_reference(core_config, feature_set, seed_model, seed_labels, spark):
    cfg = core_config.with_overrides({"strategy": "badge", "batch_size": 40, "ranked_batch_candidates": 300})
    labelled = seed_labels["id"].to_numpy()
    result = query(feature_set, seed_model, cfg, exclude_ids=labelled, spark=spark)
    ids, X, proba = candidate_set(feature_set, seed_model, labelled, "uncertainty", 300, spark)
    expected = badge_reference(proba, X, ids, 40, seed=cfg.seed)
    assert result.items["id"].tolist() == expected.tolist()  # same items, same order
    assert result.candidates == 300
    # The random state is the config's seed plus the round.
    again = query(feature_set, seed_model, cfg, exclude_ids=labelled, round_number=1, spark=spark)
    assert again.items["id"].tolist() == badge_reference(proba, X, ids, 40, seed=cfg.seed + 1).tolist()
    assert again.items["id"].tolist() != expected.tolist()


def test_exact_global_top_k_is_independent_of_partitioning(core_config, feature_set, seed_model, seed_labels, spark):
    strategy = get_strategy("margin")
    labelled = seed_labels["id"].to_numpy()
    few = score_pool_top_k(feature_set, seed_model, strategy, 25, labelled, spark)
    many = score_pool_top_k(feature_set, seed_model, strategy, 500, labelled, spark)
    assert few["id"].tolist() == many["id"].head(25).tolist()


def test_top_k_breaks_ties_by_id():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    ids = np.array([40, 10, 30, 20, 50])
    assert ids[top_k_order(scores, ids, 3)].tolist() == [10, 20, 30]


def test_batch_as_fraction_of_pool(core_config, feature_set, seed_model, seed_labels, spark):
    cfg = core_config.with_overrides({"strategy": "entropy", "batch_size": 0.01})
    result = query(feature_set, seed_model, cfg, exclude_ids=seed_labels["id"].to_numpy(), spark=spark)
    assert len(result.items) == round(0.01 * (8017 - 230))


def test_a_class_missing_from_training_does_not_break_tuning(core_config, feature_set, corpus):
    # 60 labels: no 'other', no 'money_transfer', a single 'student_loan'.
    docs = corpus.docs
    picks = []
    for label, n in [
        ("credit_reporting", 20),
        ("debt_collection", 20),
        ("mortgage", 10),
        ("credit_card", 9),
        ("student_loan", 1),
    ]:
        picks.extend(docs.index[docs["label"] == label][:n])
    labelled = docs.loc[picks]
    _, X = load_features(feature_set, labelled["id"].to_numpy())
    y = labelled["label"].to_numpy(dtype=object)
    result = tune(X, y, core_config, max_evals=4)
    assert len(result.trials) == 4
    model = result.model
    assert list(model.classes_) == list(core_config.classes)
    # Evaluate on items of every class, including two never seen in training.
    rest = docs.drop(index=picks).groupby("label").head(5)
    _, X_eval = load_features(feature_set, rest["id"].to_numpy())
    proba = model.predict_proba(X_eval)
    assert proba.shape == (len(rest), 9)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    missing = [list(model.classes_).index(c) for c in ("other", "money_transfer")]
    assert (proba[:, missing] == 0).all()
    from al_tasks.ml.evaluate import evaluate

    metrics = evaluate(model, X_eval, rest["label"].to_numpy(dtype=object), core_config.classes)
    assert 0 < metrics["accuracy"] < 1 and np.isfinite(metrics["log_loss"])


def test_single_example_class_goes_to_training():
    y = np.array(["a"] * 10 + ["b"] * 5 + ["c"], dtype=object)
    train, validation = stratified_split(y, 0.2, seed=0)
    assert "c" in set(y[train]) and "c" not in set(y[validation])
    assert {"a", "b"} <= set(y[validation]) and {"a", "b"} <= set(y[train])
    assert sorted(np.concatenate([train, validation]).tolist()) == list(range(16))


def test_tuning_is_seeded_and_binary_works(core_config, feature_set, seed_labels):
    cfg = core_config.with_overrides({"positive_class": "debt_collection"})
    assert cfg.classes == ("debt_collection", "rest")
    labels = np.where(seed_labels["label"].to_numpy() == "debt_collection", "debt_collection", "rest").astype(object)
    _, X = load_features(feature_set, seed_labels["id"].to_numpy())
    first = tune(X, labels, cfg, max_evals=5)
    second = tune(X, labels, cfg, max_evals=5)
    assert first.best_params == second.best_params
    assert [t["log_loss"] for t in first.trials] == [t["log_loss"] for t in second.trials]
    assert first.model.predict_proba(X).shape == (230, 2)


def test_the_c_bound_check_fires_at_a_bound_and_not_inside(core_config, feature_set, seed_labels):
    _, X = load_features(feature_set, seed_labels["id"].to_numpy())
    y = seed_labels["label"].to_numpy(dtype=object)
    # A normal search: the best C is inside the default range.
    normal = tune(X, y, core_config, max_evals=6)
    assert normal.c_at_bound == "no" and normal.c_shifts == 0 and len(normal.trials) == 6
    assert normal.log_c_range == (core_config.log_c_low, core_config.log_c_high)
    # Constructed: e^-10 .. e^-5 is far below any useful C (the loss falls as C grows), so
    # the best sits at its top once TPE follows the 20 random start-up trials.
    narrow = core_config.with_overrides({"log_c_low": -10.0, "log_c_high": -5.0, "c_bound_shifts": 0})
    capped = tune(X, y, narrow, max_evals=24)
    assert capped.c_at_bound == "high" and capped.c_shifts == 0
    # With a shift the search goes on above the bound, with half the trials.
    shifted = tune(X, y, narrow.with_overrides({"c_bound_shifts": 1}), max_evals=24)
    assert shifted.c_shifts == 1 and shifted.log_c_range == (-10.0, -2.5)
    assert [t["search"] for t in shifted.trials] == [0] * 24 + [1] * 12
    assert [t["number"] for t in shifted.trials] == list(range(36))
    assert max(t["C"] for t in shifted.trials) > math.exp(-5.0)
    assert shifted.best_loss <= capped.best_loss
    # Without class weights in the search, every trial uses none.
    unweighted = tune(X, y, core_config.with_overrides({"search_class_weight": False}), max_evals=4)
    assert {t["class_weight"] for t in unweighted.trials} == {None}
