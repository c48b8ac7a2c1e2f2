"""The scikit-learn featurizer (``featurizer = "hashing_vectorizer"``): text -> L2-normalised TF-IDF.

Same definition as the Spark ML pipeline of :mod:`al_tasks.ml.features` (lower-cased words
of 2+ letters, Spark's English stop words plus CFPB redactions removed before hashing,
``num_features`` buckets, IDF ``log((n + 1) / (df + 1))`` and 0 below ``min_doc_freq``,
rows of unit length) but tokenized and hashed by scikit-learn's ``HashingVectorizer``
(MurmurHash3, unsigned), which is about twice as fast as the JVM stages on 2 cores. The
buckets differ from Spark's HashingTF, so a feature set is one or the other (the setting is
part of the fingerprint).

On Spark, :func:`fit_and_write` tokenizes each partition once in ``mapInArrow`` (the term
frequencies are kept on the executors' disk), sums the partitions' document frequencies on
the driver (one ``num_features`` vector per partition, never a document), then applies IDF
and L2 in the workers and writes the features. The fitted featurizer is a small folder
(JSON + IDF vector) that the daily and stream scorers load; it transforms new texts in the
calling process, with no Spark.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

TOKEN_PATTERN = r"[a-z][a-z']+"
KIND = "hashing_vectorizer"
#: Spark's sparse-vector struct, as the features Parquet stores it (type 0 = sparse).
VECTOR_TYPE = pa.struct(
    [("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))]
)


class HashingFeaturizer:
    """A fitted (``idf`` given) or unfitted scikit-learn featurizer.

    Parameters
    ----------
    num_features : int, vector width
    stop_words : list of str, removed before hashing
    min_doc_freq : int, terms in fewer documents get IDF 0
    idf : float64 array of shape (num_features,), or None before fitting
    """

    def __init__(self, num_features: int, stop_words: list[str], min_doc_freq: int, idf: np.ndarray | None = None):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.num_features = int(num_features)
        self.stop_words = list(stop_words)
        self.min_doc_freq = int(min_doc_freq)
        self.idf = idf
        self.hasher = HashingVectorizer(
            n_features=self.num_features,
            token_pattern=TOKEN_PATTERN,
            lowercase=True,
            stop_words=self.stop_words,
            alternate_sign=False,
            norm=None,
            dtype=np.float64,
        )

    def term_frequencies(self, texts) -> sp.csr_matrix:
        """CSR float64 of shape (len(texts), num_features): word counts per bucket."""
        X = self.hasher.transform(texts)
        X.sort_indices()
        return X

    def fit_idf(self, doc_freq: np.ndarray, n_docs: int) -> HashingFeaturizer:
        """Spark IDF's formula from summed document frequencies."""
        idf = np.log((n_docs + 1.0) / (doc_freq.astype(np.float64) + 1.0))
        idf[doc_freq < self.min_doc_freq] = 0.0
        self.idf = idf
        return self

    def weigh(self, tf: sp.csr_matrix) -> sp.csr_matrix:
        """IDF then unit L2 rows (rows of zeros stay zero)."""
        X = tf.multiply(self.idf[np.newaxis, :]).tocsr()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        X = sp.diags(1.0 / norms) @ X
        X.eliminate_zeros()
        X.sort_indices()
        return X.tocsr()

    def transform(self, texts) -> sp.csr_matrix:
        """CSR float32 of shape (len(texts), num_features), the same vectors as featurize."""
        return self.weigh(self.term_frequencies(texts)).astype(np.float32)

    # --- saved as a folder ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "idf.npy", self.idf)
        meta = {
            "kind": KIND,
            "num_features": self.num_features,
            "min_doc_freq": self.min_doc_freq,
            "token_pattern": TOKEN_PATTERN,
            "stop_words": self.stop_words,
        }
        (path / "featurizer.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HashingFeaturizer:
        path = Path(path)
        meta = json.loads((path / "featurizer.json").read_text())
        return cls(meta["num_features"], meta["stop_words"], meta["min_doc_freq"], np.load(path / "idf.npy"))

    @staticmethod
    def is_saved_at(path: str | Path) -> bool:
        return (Path(path) / "featurizer.json").exists()


def csr_to_vectors(X: sp.csr_matrix) -> pa.StructArray:
    """CSR rows -> Spark's sparse-vector struct column (the features Parquet's ``features``)."""
    X = X.tocsr()
    offsets = pa.array(X.indptr.astype(np.int32))
    indices = pa.ListArray.from_arrays(offsets, pa.array(X.indices.astype(np.int32)))
    values = pa.ListArray.from_arrays(offsets, pa.array(X.data.astype(np.float64)))
    n = X.shape[0]
    return pa.StructArray.from_arrays(
        [pa.array(np.zeros(n, np.int8)), pa.array(np.full(n, X.shape[1], np.int32)), indices, values],
        fields=list(VECTOR_TYPE),
    )


def features_table(ids: np.ndarray, X: sp.csr_matrix) -> pa.Table:
    """(id int64, features struct) as the features Parquet stores them."""
    return pa.table({"id": pa.array(np.asarray(ids, dtype=np.int64)), "features": csr_to_vectors(X)})


def fit_and_write(featurizer: HashingFeaturizer, spark, docs_path: Path, root: Path) -> None:
    """One tokenize/hash pass on Spark; document frequencies summed over partitions; features written."""
    from pyspark import StorageLevel

    docs = spark.read.parquet(str(docs_path)).select("id", "text")
    if docs.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:
        docs = docs.repartition(spark.sparkContext.defaultParallelism)
    unfitted = spark.sparkContext.broadcast(featurizer)

    def tf_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        f = unfitted.value
        for batch in batches:
            X = f.term_frequencies(batch.column(1).to_numpy(zero_copy_only=False))
            offsets = pa.array(X.indptr.astype(np.int32))
            yield pa.RecordBatch.from_arrays(
                [
                    batch.column(0),
                    pa.ListArray.from_arrays(offsets, pa.array(X.indices.astype(np.int32))),
                    pa.ListArray.from_arrays(offsets, pa.array(X.data)),
                ],
                names=["id", "indices", "values"],
            )

    tf = docs.mapInArrow(tf_partition, "id long, indices array<int>, values array<double>")
    tf = tf.persist(StorageLevel.DISK_ONLY)
    try:
        spark.sparkContext.setJobDescription("featurize: tokenize, hash, document frequencies")
        n_docs, doc_freq = _document_frequencies(tf, featurizer.num_features)
        featurizer.fit_idf(doc_freq, n_docs).save(root / "pipeline")
        spark.sparkContext.setJobDescription("featurize: IDF, normalise, write")
        _weigh_and_write(spark, tf, featurizer, root / "features.parquet")
    finally:
        spark.sparkContext.setJobDescription(None)
        tf.unpersist()
        unfitted.unpersist()


def _document_frequencies(tf, num_features: int) -> tuple[int, np.ndarray]:
    """(documents, int64 document frequency per bucket): one vector per partition to the driver."""

    def partition_df(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        df, n = np.zeros(num_features, np.int64), 0
        for batch in batches:
            df += np.bincount(batch.column(1).flatten().to_numpy(), minlength=num_features)
            n += batch.num_rows
        yield pa.RecordBatch.from_arrays(
            [pa.array([n], pa.int64()), pa.array([df.astype(np.int32).tobytes()], pa.binary())], names=["n", "df"]
        )

    parts = tf.mapInArrow(partition_df, "n long, df binary").toArrow()
    doc_freq = np.zeros(num_features, np.int64)
    for blob in parts.column("df").to_pylist():
        doc_freq += np.frombuffer(blob, np.int32)
    return int(np.sum(parts.column("n").to_numpy())), doc_freq


def _weigh_and_write(spark, tf, featurizer: HashingFeaturizer, out: Path) -> None:
    fitted = spark.sparkContext.broadcast(featurizer)
    num_features = featurizer.num_features

    def partition_weigh(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        f = fitted.value
        for batch in batches:
            if not batch.num_rows:
                continue
            indices, values = batch.column(1), batch.column(2)
            offsets = indices.offsets.to_numpy()
            tf_rows = sp.csr_matrix(
                (values.flatten().to_numpy(), indices.flatten().to_numpy(), offsets - offsets[0]),
                shape=(batch.num_rows, num_features),
            )
            yield features_table(batch.column(0).to_numpy(), f.weigh(tf_rows)).to_batches()[0]

    schema = "id long, features struct<type: tinyint, size: int, indices: array<int>, values: array<double>>"
    try:
        tf.mapInArrow(partition_weigh, schema).write.mode("overwrite").parquet(str(out))
    finally:
        fitted.unpersist()
