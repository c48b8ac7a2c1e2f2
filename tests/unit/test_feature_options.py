"""Feature options of the scikit-learn featurizer without Spark: the fingerprint follows
every option, spark_ml refuses them, and the weights are what the options say."""

from __future__ import annotations

import numpy as np
import pytest

from al_tasks.config import LoopConfig
from al_tasks.errors import ConfigError
from al_tasks.ml.features import REDACTION_TOKENS, features_fingerprint
from al_tasks.ml.hashing import HashingFeaturizer, sample_keys

STOP_WORDS = ["the", "and", "of", "to", "my", "i", *REDACTION_TOKENS]


#: The options off: plain TF-IDF (the defaults are sublinear TF + LSA, chosen by bench/label_efficiency).
PLAIN = {"sublinear_tf": False, "ngram_max": 1, "lsa_components": 0}


def test_default_featurizer_is_hashing_vectorizer_with_the_benchmarked_options():
    config = LoopConfig()
    assert config.featurizer == "hashing_vectorizer"
    assert (config.sublinear_tf, config.ngram_max, config.lsa_components) == (True, 1, 200)


@pytest.mark.parametrize(
    "change",
    [
        {"sublinear_tf": False},
        {"ngram_max": 2},
        {"lsa_components": 20},
        {"lsa_components": 0},
        {"featurizer": "spark_ml", **PLAIN},
        {"num_features": 1024},
        {"min_doc_freq": 3},
    ],
)
def test_the_feature_fingerprint_changes_with_each_option(change):
    base = LoopConfig()
    assert features_fingerprint("corpus-fp", base.with_overrides(change)) != features_fingerprint("corpus-fp", base)


def test_the_lsa_sample_size_is_in_the_fingerprint_when_there_is_an_lsa_block():
    lsa = LoopConfig(lsa_components=20, lsa_sample_size=2000)
    assert features_fingerprint("fp", lsa) != features_fingerprint("fp", lsa.with_overrides({"lsa_sample_size": 3000}))
    # Without an LSA block the sample size shapes nothing: the same features are reused.
    plain = LoopConfig(**PLAIN)
    assert features_fingerprint("fp", plain) == features_fingerprint(
        "fp", plain.with_overrides({"lsa_sample_size": 3000})
    )
    assert features_fingerprint("fp", plain) == features_fingerprint("fp", LoopConfig(**PLAIN))
    assert features_fingerprint("fp", plain) != features_fingerprint("other-corpus", plain)


@pytest.mark.parametrize("option", [{"sublinear_tf": True}, {"ngram_max": 2}, {"lsa_components": 20}])
def test_spark_ml_refuses_the_feature_options(option):
    assert LoopConfig(featurizer="spark_ml", **PLAIN).featurizer == "spark_ml"
    with pytest.raises(ConfigError, match="need featurizer='hashing_vectorizer'"):
        LoopConfig(featurizer="spark_ml", **{**PLAIN, **option})
    with pytest.raises(ConfigError, match="need featurizer='hashing_vectorizer'"):
        LoopConfig(**PLAIN).with_overrides({"featurizer": "spark_ml", **{k: str(v) for k, v in option.items()}})
    assert getattr(LoopConfig(**option), next(iter(option))) == next(iter(option.values()))


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [("ngram_max", "3", "<= 2"), ("ngram_max", "0", ">= 1"), ("lsa_components", "-1", ">= 0")],
)
def test_bad_feature_options_name_the_setting(name, value, message):
    with pytest.raises(ConfigError, match=f"{name}.*{message}"):
        LoopConfig().with_overrides({name: value})


def test_lsa_components_must_be_below_the_sample_size():
    with pytest.raises(ConfigError, match="lsa_components=50 must be below lsa_sample_size=50"):
        LoopConfig(lsa_components=50, lsa_sample_size=50)


def _fitted(texts: list[str], **options) -> HashingFeaturizer:
    featurizer = HashingFeaturizer(1024, STOP_WORDS, 1, **options)
    tf = featurizer.term_frequencies(texts)
    return featurizer.fit_idf(np.bincount(tf.indices, minlength=1024), len(texts))


def test_sublinear_tf_weighs_one_plus_log_of_the_count():
    texts = ["fee fee fee fee late", "late payment", "fee refund"]
    raw, sub = _fitted(texts), _fitted(texts, sublinear_tf=True)
    np.testing.assert_array_equal(raw.idf, sub.idf)  # document frequencies do not change
    fee, late = raw.hasher.transform(["fee"]).indices[0], raw.hasher.transform(["late"]).indices[0]
    X_raw, X_sub = raw.transform(texts[:1]).toarray()[0], sub.transform(texts[:1]).toarray()[0]
    ratio = lambda x: x[fee] / x[late]  # noqa: E731
    np.testing.assert_allclose(ratio(X_raw), 4 * raw.idf[fee] / raw.idf[late], rtol=1e-5)
    np.testing.assert_allclose(ratio(X_sub), (1 + np.log(4)) * raw.idf[fee] / raw.idf[late], rtol=1e-5)


def test_bigrams_are_formed_after_stop_words_are_removed():
    featurizer = _fitted(["late fee", "the late fee"], ngram_max=2)
    X = featurizer.term_frequencies(["late fee", "late of the fee", "fee late"])
    assert X[0].nnz == 3  # late, fee, "late fee"
    assert (X[0] != X[1]).nnz == 0  # the stop words between them are gone before the bigram
    assert (X[0] != X[2]).nnz > 0  # "fee late" is another bigram
    assert _fitted(["late fee"]).term_frequencies(["late fee"]).nnz == 2


def test_sample_keys_are_fixed_uniform_and_order_free():
    ids = np.arange(3_000_000_000, 3_000_100_000, dtype=np.int64)
    keys = sample_keys(ids)
    assert keys.min() >= 0 and keys.max() < 1 and abs(keys.mean() - 0.5) < 0.01
    shuffled = np.random.default_rng(0).permutation(ids)
    np.testing.assert_array_equal(sample_keys(shuffled), keys[shuffled - ids[0]])
    assert len(np.unique(keys)) == len(ids)


def test_the_lsa_block_is_appended_unit_length_and_saved(tmp_path):
    rng = np.random.default_rng(3)
    words = ["".join(rng.choice(list("abcdefghij"), size=5)) for _ in range(300)]
    texts = [" ".join(rng.choice(words, size=30)) for _ in range(200)]
    featurizer = _fitted(texts, lsa_components=8, lsa_sample_size=100)
    assert featurizer.needs_lsa and featurizer.width == 1024
    featurizer.fit_lsa(featurizer.tfidf(featurizer.term_frequencies(texts[:100])), np.ones(1024, np.int64))
    assert featurizer.width == 1024 + 8 and featurizer.components.dtype == np.float32
    X = featurizer.transform([*texts[100:], "the and of"])
    assert X.shape == (101, 1032)
    tfidf, block = X[:, :1024].toarray(), X[:, 1024:].toarray()
    np.testing.assert_allclose(np.linalg.norm(tfidf[:-1], axis=1), 1.0, rtol=1e-5)  # TF-IDF block unchanged
    np.testing.assert_allclose(np.linalg.norm(block[:-1], axis=1), 1.0, rtol=1e-5)
    assert X[-1].nnz == 0  # a text of stop words has no vector at all
    featurizer.save(tmp_path / "pipeline")
    loaded = HashingFeaturizer.load(tmp_path / "pipeline")
    assert (loaded.width, loaded.lsa_components, loaded.lsa_sample_size) == (1032, 8, 100)
    assert abs(loaded.transform(texts[100:]) - X[:-1]).max() == 0
