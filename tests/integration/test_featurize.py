"""Featurize on the real CFPB sample: stop words go before hashing, vectors stay sparse,
an unchanged corpus is never refitted, bad corpus rows are rejected with reasons, and
every featurizer and feature option gives the same vectors through featurize, the daily
additions and the stream scorer."""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from al_tasks.errors import CorpusError
from al_tasks.io.corpus import read_corpus
from al_tasks.ml.features import REDACTION_TOKENS, featurize, load_features, transform_texts

#: Featurizer settings the vectors are checked for (the session's ``feature_set`` is "default").
VARIANTS = {
    "default": {},
    "spark_ml": {"featurizer": "spark_ml", "sublinear_tf": False, "lsa_components": 0},
    "raw_tf": {"sublinear_tf": False},
    "plain_tfidf": {"sublinear_tf": False, "lsa_components": 0},
    "bigrams": {"ngram_max": 2},
    "lsa": {"lsa_components": 20, "lsa_sample_size": 2000},
}


@pytest.fixture(scope="module")
def variant_features(core_config, feature_set, spark, tmp_path_factory):
    """``name -> (config, FeatureSet)`` of :data:`VARIANTS`, each featurized once, in its own workspace."""
    done = {"default": (core_config, feature_set)}

    def get(name: str):
        if name not in done:
            workspace = tmp_path_factory.mktemp(f"features-{name}")
            config = core_config.with_overrides({"workspace": str(workspace), **VARIANTS[name]})
            done[name] = (config, featurize(config, spark, chunk_rows=2000))
        return done[name]

    return get


def test_corpus_reader_takes_the_cfpb_export(corpus):
    assert len(corpus.docs) == 8017
    assert corpus.docs["id"].dtype == np.int64 and corpus.docs["id"].is_unique
    assert set(corpus.docs.columns) == {"id", "text", "label"}
    assert corpus.docs["text"].str.len().min() > 0
    assert len(corpus.rejects) == 0


def test_stop_words_are_removed_before_hashing(variant_features, spark):
    from pyspark.ml import PipelineModel

    _config, feature_set = variant_features("spark_ml")
    stages = PipelineModel.load(str(feature_set.pipeline_path)).stages
    names = [type(s).__name__ for s in stages]
    assert names[:3] == ["RegexTokenizer", "StopWordsRemover", "HashingTF"]
    assert stages[2].getInputCol() == stages[1].getOutputCol(), "HashingTF must hash the filtered words"
    assert set(REDACTION_TOKENS) <= set(stages[1].getStopWords())

    # Behaviour: a text of stop words and CFPB redactions only has no features at all,
    # and adding stop words to a real narrative does not change its vector.
    narrative = "My mortgage servicer charged late fees although I paid on time."
    docs = pd.DataFrame(
        {
            "id": [1, 2, 3],
            "text": [
                "The and of XXXX XX/XX/XXXX which were they to",
                narrative,
                "the " + narrative.replace(" ", " the and of ") + " XXXX",
            ],
        }
    )
    ids, X = transform_texts(feature_set.pipeline_path, docs, spark=spark)
    X = X[np.argsort(ids)]
    assert X[0].nnz == 0
    assert X[1].nnz > 0
    np.testing.assert_allclose(X[1].toarray(), X[2].toarray(), rtol=1e-6)


def test_features_stay_sparse(feature_set, core_config):
    schema = pq.read_schema(next(feature_set.features_path.glob("*.parquet")))
    vector = schema.field("features").type
    assert [vector.field(i).name for i in range(vector.num_fields)] == ["type", "size", "indices", "values"]
    _ids, X = load_features(feature_set)
    assert sp.isspmatrix_csr(X) and X.shape == (8017, feature_set.num_features)
    assert X.nnz / (X.shape[0] * X.shape[1]) < 0.002  # ~100 of 262,144 columns per row
    # Two L2-normalised blocks: the hashed TF-IDF, then the LSA block (default 200 columns).
    hashed = core_config.num_features
    assert feature_set.num_features == hashed + core_config.lsa_components
    for block in (X[:, :hashed], X[:, hashed:]):
        norms = np.sqrt(np.asarray(block.multiply(block).sum(axis=1)).ravel())
        np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-4)


def test_load_features_keeps_the_requested_order(feature_set, corpus):
    wanted = corpus.docs["id"].to_numpy()[[50, 3, 7000, 3]]
    ids, X = load_features(feature_set, wanted)
    assert ids.tolist() == wanted.tolist()
    np.testing.assert_array_equal(X[1].toarray(), X[3].toarray())
    with pytest.raises(KeyError, match="not in"):
        load_features(feature_set, [123])


def test_unchanged_corpus_is_not_refitted(core_config, feature_set, spark):
    before = {p: os.stat(p).st_mtime_ns for p in feature_set.root.rglob("*") if p.is_file()}
    again = featurize(core_config, spark)
    assert again.reused and again.root == feature_set.root
    after = {p: os.stat(p).st_mtime_ns for p in feature_set.root.rglob("*") if p.is_file()}
    assert before == after
    # A changed setting is a different feature set.
    from al_tasks.ml.features import fingerprint

    assert (
        fingerprint(core_config.corpus_path, core_config.with_overrides({"num_features": 1024}))
        != feature_set.fingerprint
    )


def test_bad_corpus_rows_are_rejected_with_line_and_reason(tmp_path):
    path = tmp_path / "complaints.csv.gz"
    body = (
        b"Complaint ID,Product,Consumer complaint narrative\n"
        b"101,Mortgage,My servicer lost my payment.\n"
        b"102,Mortgage,\n"
        b"abc,Mortgage,Debt collector keeps calling.\n"
        b"101,Mortgage,Duplicate id here.\n"
        b"104,Mortgage,Bad bytes \xff\xfe in this narrative.\n"
        b"105,Credit card,Card was charged twice.\n"
    )
    path.write_bytes(gzip.compress(body))
    corpus = read_corpus(path, with_labels=False)
    assert corpus.docs["id"].tolist() == [101, 105]
    rejects = corpus.rejects.set_index("line")
    assert rejects.loc[3, "reason"] == "empty narrative"
    assert rejects.loc[4, "reason"] == "id is not a whole number"
    assert rejects.loc[5, "reason"].startswith("duplicate id")
    assert "not UTF-8" in rejects.loc[6, "reason"]
    assert len(corpus.docs) + len(corpus.rejects) == 6  # nothing lost


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text("Complaint ID,Product\n1,Mortgage\n")
    with pytest.raises(CorpusError, match=r"export\.csv: missing column\(s\) \['Consumer complaint narrative'\]"):
        read_corpus(path)


def _previous_path_features(config, spark, docs: pd.DataFrame) -> sp.csr_matrix:
    """The featurize before the streaming ingest: pandas corpus -> Spark DataFrame -> fit -> transform."""
    from al_tasks.ml.features import build_pipeline

    frame = spark.createDataFrame(docs[["id", "text"]], schema="id LONG, text STRING")
    model = build_pipeline(config).fit(frame)
    rows = model.transform(frame).select("id", "features").toPandas().sort_values("id")
    X = sp.vstack(
        [sp.csr_matrix((v.values, v.indices, [0, len(v.indices)]), shape=(1, v.size)) for v in rows["features"]]
    )
    return rows["id"].to_numpy(), X.tocsr()


def test_featurize_streams_the_corpus_in_chunks_and_gives_the_previous_features(core_config, spark, tmp_path, caplog):
    """A corpus 16x the chunk: the driver holds one chunk of texts at a time (reader
    counters, tracemalloc), Spark reads the ingested dataset, and the vectors are those
    of the previous whole-corpus path."""
    import tracemalloc

    from al_tasks.io.corpus import ReadStats, ingest_corpus, iter_corpus_chunks

    config = core_config.with_overrides(
        {"workspace": str(tmp_path / "ws"), "featurizer": "spark_ml", "sublinear_tf": False, "lsa_components": 0}
    )
    corpus_text_bytes = sum(len(t.encode()) for t in read_corpus(config.corpus_path).docs["text"])
    tracemalloc.start()
    for _chunk in iter_corpus_chunks(config.corpus_path, config, chunk_rows=500, bad_bytes=False):
        pass
    _, reader_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert reader_peak < corpus_text_bytes / 3, (reader_peak, corpus_text_bytes)
    stats = ReadStats()
    ingest_corpus(config, chunk_rows=500, stats=stats)
    with caplog.at_level("INFO", logger="al_tasks"):
        fs = featurize(config, spark, chunk_rows=500, progress_seconds=0.5)
    assert (stats.chunks, stats.peak_chunk_rows, stats.accepted) == (17, 500, 8017)
    progress = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert progress and "of 8,017 docs" in progress[-1], progress
    assert fs.docs_path == fs.docs_root and not (fs.root / "docs.parquet").exists()  # texts stored once
    assert len(list(fs.docs_path.glob("part-*.parquet"))) == 17

    ids, X = load_features(fs)
    order = np.argsort(ids)
    prev_ids, X_prev = _previous_path_features(config, spark, read_corpus(config.corpus_path).docs)
    np.testing.assert_array_equal(ids[order], prev_ids)
    diff = abs(X[order] - X_prev)
    assert diff.max() < 1e-6
    texts = fs.texts(ids[:3])
    assert sorted(texts["id"]) == sorted(ids[:3].tolist()) and texts["text"].str.len().min() > 0


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_featurize_daily_addition_and_stream_give_identical_vectors(variant, variant_features, spark, tmp_path):
    """The same texts: featurized with the corpus (on Spark), added to the pool as a day's
    complaints, scored by the stream scorer -> the same vectors, for each featurizer and
    feature option; the vectors are unit TF-IDF rows (plus a unit LSA block)."""
    import shutil

    from al_tasks.ml.features import FeatureSet, add_to_pool, load_pipeline, pipeline_width
    from al_tasks.ml.hashing import HashingFeaturizer
    from al_tasks.scoring.stream import BatchScorer
    from al_tasks.workspace import TaskWorkspace

    config, shared = variant_features(variant)
    # Pool additions go to a copy, so the shared feature set stays the corpus alone.
    config = config.with_overrides({"workspace": str(tmp_path / "ws")})
    target = TaskWorkspace(config).feature_dir(shared.fingerprint)
    shutil.copytree(shared.root, target)
    fs = FeatureSet.load(target)
    featurizer = load_pipeline(fs.pipeline_path)
    lsa = config.lsa_components
    assert fs.num_features == pipeline_width(featurizer) == config.num_features + lsa

    ids, X = load_features(fs)
    assert X.shape == (8017, fs.num_features)
    tfidf_norms = np.sqrt(np.asarray(X[:, : config.num_features].power(2).sum(axis=1)).ravel())
    np.testing.assert_allclose(tfidf_norms[tfidf_norms > 0], 1.0, rtol=1e-4)
    if lsa:
        block = X[:, config.num_features :].toarray()
        np.testing.assert_allclose(np.linalg.norm(block, axis=1)[tfidf_norms > 0], 1.0, rtol=1e-4)
        assert (np.abs(block) > 0).sum(axis=1).mean() > lsa / 2  # a dense block, not a few stray values

    pick = np.sort(ids)[[3, 40, 500, 7000]]
    _, X_corpus = load_features(fs, pick)
    docs = pd.DataFrame({"id": pick + 10**12, "text": fs.texts(pick).set_index("id").loc[pick, "text"].to_numpy()})
    added, rejects = add_to_pool(fs, "2099-01-01", docs, spark=spark, config=config)
    assert added == 4 and rejects.empty
    _, X_daily = load_features(fs, docs["id"].to_numpy())
    stream_ids, X_stream = BatchScorer(config, tmp_path / "out", fs.pipeline_path).transform(docs, spark)
    assert stream_ids.tolist() == docs["id"].tolist() and X_corpus.nnz > 0
    for other in (X_daily, X_stream):
        assert other.shape == X_corpus.shape
        assert abs(X_corpus - other).max() < 1e-6

    if isinstance(featurizer, HashingFeaturizer):
        assert set(REDACTION_TOKENS) <= set(featurizer.stop_words)
        assert (featurizer.sublinear_tf, featurizer.ngram_max, featurizer.lsa_components) == (
            config.sublinear_tf,
            config.ngram_max,
            lsa,
        )
        # Spark's sum of per-partition document frequencies = the whole corpus's.
        corpus = read_corpus(config.corpus_path).docs
        tf = featurizer.term_frequencies(corpus["text"].tolist())
        whole = HashingFeaturizer.from_config(config, featurizer.stop_words).fit_idf(
            np.bincount(tf.indices, minlength=config.num_features), len(corpus)
        )
        np.testing.assert_allclose(featurizer.idf, whole.idf)
        # Stop words and redactions are not hashed (nor is there an LSA value without words).
        _, X_stop = transform_texts(featurizer, pd.DataFrame({"id": [1], "text": ["The and of XXXX which were"]}))
        assert X_stop.nnz == 0


def test_each_feature_option_changes_the_vectors(variant_features):
    """Not a no-op: each option's vectors differ from the default's on the same documents."""
    _, default = variant_features("default")
    ids, X_default = load_features(default)
    for name in ("raw_tf", "plain_tfidf", "bigrams", "lsa"):
        _, X = load_features(variant_features(name)[1], ids)
        assert X.shape != X_default.shape or abs(X - X_default).max() > 0.05, name


def test_the_lsa_block_is_deterministic(variant_features, core_config, spark, tmp_path):
    """Two featurize runs in different workspaces (another chunking of the corpus, so other
    partitions) give equal vectors: the sample and the SVD depend on the ids only."""
    config, first = variant_features("lsa")
    again = featurize(config.with_overrides({"workspace": str(tmp_path / "ws")}), spark, chunk_rows=700)
    assert not again.reused and again.fingerprint == first.fingerprint
    ids, X_first = load_features(first)
    _, X_again = load_features(again, ids)
    assert X_first.shape == X_again.shape == (8017, config.num_features + 20)
    assert abs(X_first - X_again).max() < 1e-6
    first_meta, again_meta = (json.loads((fs.pipeline_path / "featurizer.json").read_text()) for fs in (first, again))
    assert first_meta == again_meta and first_meta["width"] == config.num_features + 20
    np.testing.assert_array_equal(
        np.load(first.pipeline_path / "lsa_columns.npy"), np.load(again.pipeline_path / "lsa_columns.npy")
    )
    components = np.load(first.pipeline_path / "components.npy")
    assert components.dtype == np.float32 and components.shape[0] == 20
    assert components.shape[1] <= 10_000
