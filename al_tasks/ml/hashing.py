"""The scikit-learn featurizer (``featurizer = "hashing_vectorizer"``, the default): text -> L2-normalised TF-IDF,
optionally with a dense LSA block learned from the whole unlabelled pool.

Same definition as the Spark ML pipeline of :mod:`al_tasks.ml.features` (lower-cased words
of 2+ letters, Spark's English stop words plus CFPB redactions removed before hashing,
``num_features`` buckets, IDF ``log((n + 1) / (df + 1))`` and 0 below ``min_doc_freq``,
rows of unit length) but tokenized and hashed by scikit-learn's ``HashingVectorizer``
(MurmurHash3, unsigned), which is about twice as fast as the JVM stages on 2 cores. The
buckets differ from Spark's HashingTF, so a feature set is one or the other (the setting is
part of the fingerprint).

Feature options (``LoopConfig``; all part of the feature fingerprint and saved in
``featurizer.json``, so the loop, the daily DAG and the stream scorer compute the same
vectors):

* ``sublinear_tf``: term frequency ``tf`` replaced by ``1 + log(tf)`` before IDF (scikit-learn
  ``TfidfTransformer(sublinear_tf=True)``). Document frequencies do not depend on it, so the
  raw counts are what is persisted between the passes and it is applied in :meth:`~HashingFeaturizer.weigh`.
* ``ngram_max``: word n-grams 1..``ngram_max`` (1 or 2), hashed into the same buckets; stop
  words are removed before the n-grams are formed (as ``HashingVectorizer`` does).
* ``lsa_components`` (0 = off), ``lsa_sample_size``: latent semantic analysis of the pool.
  After the IDF is fitted, a deterministic sample of at most ``lsa_sample_size`` documents
  (the smallest values of a fixed hash of their ids: independent of partitioning, order and
  the tuning seed) is brought to the driver as TF-IDF rows, and a randomized
  ``TruncatedSVD`` (``random_state=0``, fixed so the features do not change with the
  tuning ``seed``) is fitted on the columns that occur in the sample and carry IDF weight,
  at most :data:`LSA_MAX_COLUMNS` of them, the most frequent in the whole corpus. The saved
  ``lsa_columns`` (int32, shape (c,)) and ``components`` (float32, shape (k, c)) are a few MB.
  A vector is the unit TF-IDF block (columns ``0 .. num_features-1``, unchanged) followed by
  the LSA block ``X[:, lsa_columns] @ components.T`` normalised to unit length (columns
  ``num_features .. num_features+k-1``) in the same sparse vector, so every consumer sees
  a wider vector (:attr:`HashingFeaturizer.width`) and nothing else changes.

Why LSA and not Spark ML ``Word2Vec``: LSA's transform is a sparse-times-small-dense
product in numpy, identical on the executors (featurize), in the daily DAG and in the
stream scorer without Spark or a JVM model; its fit needs only a sample bounded in memory
on the driver (``lsa_sample_size`` rows of ~100 non-zeros) while the transform runs on the
executors; it reuses the TF-IDF already computed (one extra pass, no second tokenization),
and it is deterministic. ``Word2Vec`` would need a JVM model in every scorer (or a
re-implementation of its averaging), a training pass over the whole corpus on the cluster
that is slower than featurize itself on 2 cores, and it is not bit-stable across
partitionings.

On Spark, :func:`fit_and_write` tokenizes each partition once in ``mapInArrow`` (the term
frequencies are kept on the executors' disk), sums the partitions' document frequencies on
the driver (one ``num_features`` vector per partition, never a document), fits the LSA on
a bounded sample when asked, then applies IDF, L2 and the LSA projection in the workers and
writes the features. The fitted featurizer is a small folder (JSON + IDF vector + LSA
arrays) that the daily and stream scorers load; it transforms new texts in the calling
process, with no Spark.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

log = logging.getLogger(__name__)

TOKEN_PATTERN = r"[a-z][a-z']+"
KIND = "hashing_vectorizer"
#: Most TF-IDF columns the LSA is fitted on (the most frequent of those in the sample):
#: 200 components x 10,000 columns of float32 is 8 MB to save and broadcast.
LSA_MAX_COLUMNS = 10_000
#: ``TruncatedSVD``'s seed: fixed, so the features do not depend on the tuning ``seed``.
LSA_RANDOM_STATE = 0
#: The sample is taken from the ids whose key falls below this many times
#: ``lsa_sample_size / n_docs``, so the driver receives about this multiple of the sample.
LSA_OVERSAMPLE = 2.0
#: Spark's sparse-vector struct, as the features Parquet stores it (type 0 = sparse).
VECTOR_TYPE = pa.struct(
    [("type", pa.int8()), ("size", pa.int32()), ("indices", pa.list_(pa.int32())), ("values", pa.list_(pa.float64()))]
)


class HashingFeaturizer:
    """A fitted (``idf`` given) or unfitted scikit-learn featurizer.

    Parameters
    ----------
    num_features : int, width of the hashed TF-IDF block
    stop_words : list of str, removed before hashing (and before n-grams are formed)
    min_doc_freq : int, terms in fewer documents get IDF 0
    idf : float64 array of shape (num_features,), or None before fitting
    sublinear_tf : bool, weigh ``1 + log(tf)`` instead of ``tf``
    ngram_max : int, word n-grams 1..ngram_max (1 or 2)
    lsa_components : int, k dense LSA columns appended to the TF-IDF (0: none)
    lsa_sample_size : int, most documents the LSA is fitted on
    lsa_columns : int32 array of shape (c,), the TF-IDF columns the LSA reads, or None before fitting
    components : float32 array of shape (k, c), the LSA's right singular vectors, or None before fitting
    """

    def __init__(
        self,
        num_features: int,
        stop_words: list[str],
        min_doc_freq: int,
        idf: np.ndarray | None = None,
        *,
        sublinear_tf: bool = False,
        ngram_max: int = 1,
        lsa_components: int = 0,
        lsa_sample_size: int = 20000,
        lsa_columns: np.ndarray | None = None,
        components: np.ndarray | None = None,
    ):
        from sklearn.feature_extraction.text import HashingVectorizer

        if ngram_max not in (1, 2):
            raise ValueError(f"ngram_max={ngram_max}: 1 or 2")
        self.num_features = int(num_features)
        self.stop_words = list(stop_words)
        self.min_doc_freq = int(min_doc_freq)
        self.idf = idf
        self.sublinear_tf = bool(sublinear_tf)
        self.ngram_max = int(ngram_max)
        self.lsa_components = int(lsa_components)
        self.lsa_sample_size = int(lsa_sample_size)
        self.lsa_columns = lsa_columns
        self.components = components
        self.hasher = HashingVectorizer(
            n_features=self.num_features,
            token_pattern=TOKEN_PATTERN,
            lowercase=True,
            stop_words=self.stop_words,
            ngram_range=(1, self.ngram_max),
            alternate_sign=False,
            norm=None,
            dtype=np.float64,
        )

    @property
    def width(self) -> int:
        """Width of the vectors: the hashed buckets plus the LSA block (once fitted)."""
        return self.num_features + (self.components.shape[0] if self.components is not None else 0)

    @property
    def needs_lsa(self) -> bool:
        """True when LSA is asked for and not fitted yet."""
        return self.lsa_components > 0 and self.components is None

    def term_frequencies(self, texts) -> sp.csr_matrix:
        """CSR float64 of shape (len(texts), num_features): raw word (and n-gram) counts per bucket."""
        X = self.hasher.transform(texts)
        X.sort_indices()
        return X

    def fit_idf(self, doc_freq: np.ndarray, n_docs: int) -> HashingFeaturizer:
        """Spark IDF's formula from summed document frequencies."""
        idf = np.log((n_docs + 1.0) / (doc_freq.astype(np.float64) + 1.0))
        idf[doc_freq < self.min_doc_freq] = 0.0
        self.idf = idf
        return self

    def tfidf(self, tf: sp.csr_matrix) -> sp.csr_matrix:
        """The TF-IDF block, CSR float64 of shape (n, num_features): (sublinear) TF, IDF, unit L2 rows
        (rows of zeros stay zero).
        """
        if self.sublinear_tf:
            tf = tf.copy()
            tf.data = 1.0 + np.log(tf.data)  # counts are >= 1, so every weight stays >= 1
        X = tf.multiply(self.idf[np.newaxis, :]).tocsr()
        X = _unit_rows(X)
        X.eliminate_zeros()
        X.sort_indices()
        return X.tocsr()

    def lsa(self, X_tfidf: sp.csr_matrix) -> np.ndarray:
        """The LSA block of TF-IDF rows, float64 of shape (n, k), rows of unit length (zero rows stay zero)."""
        dense = np.asarray(X_tfidf[:, self.lsa_columns] @ self.components.T.astype(np.float64))
        norms = np.linalg.norm(dense, axis=1)
        norms[norms == 0] = 1.0
        return dense / norms[:, np.newaxis]

    def weigh(self, tf: sp.csr_matrix) -> sp.csr_matrix:
        """Term frequencies -> vectors, CSR float64 of shape (n, width): the TF-IDF block, then
        the LSA block when fitted.
        """
        X = self.tfidf(tf)
        if self.components is None:
            return X
        block = sp.csr_matrix(self.lsa(X))
        block.eliminate_zeros()
        out = sp.hstack([X, block], format="csr")
        out.sort_indices()
        return out

    def fit_lsa(self, X_sample: sp.csr_matrix, doc_freq: np.ndarray) -> HashingFeaturizer:
        """Fit the LSA on TF-IDF rows of a sample of the pool.

        Parameters
        ----------
        X_sample : CSR of shape (m, num_features), TF-IDF rows (:meth:`tfidf`) of at most
            ``lsa_sample_size`` documents, in a fixed order
        doc_freq : int64 array of shape (num_features,), document frequencies of the whole
            corpus: ranks the columns when more than :data:`LSA_MAX_COLUMNS` occur
        """
        from sklearn.decomposition import TruncatedSVD

        from al_tasks.errors import ConfigError

        in_sample = np.flatnonzero(np.diff(X_sample.tocsc().indptr) > 0)
        weighted = in_sample[self.idf[in_sample] > 0]
        if len(weighted) > LSA_MAX_COLUMNS:
            # The most frequent first; ties by bucket, so the choice is deterministic.
            by_freq = np.lexsort((weighted, -doc_freq[weighted]))
            weighted = weighted[by_freq[:LSA_MAX_COLUMNS]]
        columns = np.sort(weighted).astype(np.int32)
        k = self.lsa_components
        if k >= min(len(columns), X_sample.shape[0]):
            raise ConfigError(
                f"lsa_components={k} needs more than {k} sampled documents and weighted columns; "
                f"the sample has {X_sample.shape[0]} documents and {len(columns)} columns: "
                "lower lsa_components or raise lsa_sample_size"
            )
        svd = TruncatedSVD(n_components=k, algorithm="randomized", random_state=LSA_RANDOM_STATE)
        svd.fit(X_sample[:, columns])
        self.lsa_columns = columns
        self.components = svd.components_.astype(np.float32)
        log.info(
            "featurize: LSA of %s sampled documents x %s columns -> %s components (%.1f%% of the variance)",
            f"{X_sample.shape[0]:,}",
            f"{len(columns):,}",
            k,
            100 * float(svd.explained_variance_ratio_.sum()),
        )
        return self

    def transform(self, texts) -> sp.csr_matrix:
        """CSR float32 of shape (len(texts), width), the same vectors as featurize."""
        return self.weigh(self.term_frequencies(texts)).astype(np.float32)

    # --- saved as a folder ---------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "idf.npy", self.idf)
        if self.components is not None:
            np.save(path / "lsa_columns.npy", self.lsa_columns)
            np.save(path / "components.npy", self.components)
        meta = {
            "kind": KIND,
            "num_features": self.num_features,
            "width": self.width,
            "min_doc_freq": self.min_doc_freq,
            "token_pattern": TOKEN_PATTERN,
            "stop_words": self.stop_words,
            "sublinear_tf": self.sublinear_tf,
            "ngram_max": self.ngram_max,
            "lsa_components": self.lsa_components,
            "lsa_sample_size": self.lsa_sample_size,
        }
        (path / "featurizer.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HashingFeaturizer:
        """The featurizer saved at ``path`` (folders saved before the feature options load
        with the neutral options they were fitted with).
        """
        path = Path(path)
        meta = json.loads((path / "featurizer.json").read_text())
        lsa = meta.get("lsa_components", 0) > 0
        return cls(
            meta["num_features"],
            meta["stop_words"],
            meta["min_doc_freq"],
            np.load(path / "idf.npy"),
            sublinear_tf=meta.get("sublinear_tf", False),
            ngram_max=meta.get("ngram_max", 1),
            lsa_components=meta.get("lsa_components", 0),
            lsa_sample_size=meta.get("lsa_sample_size", 20000),
            lsa_columns=np.load(path / "lsa_columns.npy") if lsa else None,
            components=np.load(path / "components.npy") if lsa else None,
        )

    @classmethod
    def from_config(cls, config, stop_words: list[str]) -> HashingFeaturizer:
        """An unfitted featurizer with ``config``'s (a :class:`~al_tasks.config.LoopConfig`) settings."""
        return cls(
            config.num_features,
            stop_words,
            config.min_doc_freq,
            sublinear_tf=config.sublinear_tf,
            ngram_max=config.ngram_max,
            lsa_components=config.lsa_components,
            lsa_sample_size=config.lsa_sample_size,
        )

    @staticmethod
    def is_saved_at(path: str | Path) -> bool:
        return (Path(path) / "featurizer.json").exists()


def _unit_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """Rows of ``X`` scaled to unit L2 length (rows of zeros stay zero)."""
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return (sp.diags(1.0 / norms) @ X).tocsr()


def sample_keys(ids: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random key in [0, 1) per id (splitmix64 of the id), float64 of shape (n,).

    The LSA sample is the ids with the smallest keys: the same documents whatever the
    partitioning or order of the corpus.
    """
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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


def fit_and_write(featurizer: HashingFeaturizer, spark, docs_path: Path, root: Path) -> HashingFeaturizer:
    """One tokenize/hash pass on Spark; document frequencies summed over partitions; the LSA
    fitted on a bounded sample when asked; features written. Returns the fitted featurizer
    (also saved as ``root / "pipeline"``).
    """
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
        featurizer.fit_idf(doc_freq, n_docs)
        if featurizer.needs_lsa:
            spark.sparkContext.setJobDescription("featurize: LSA sample")
            featurizer.fit_lsa(featurizer.tfidf(_lsa_sample(tf, featurizer, n_docs)), doc_freq)
        featurizer.save(root / "pipeline")
        spark.sparkContext.setJobDescription("featurize: IDF, normalise, LSA, write")
        _weigh_and_write(spark, tf, featurizer, root / "features.parquet")
    finally:
        spark.sparkContext.setJobDescription(None)
        tf.unpersist()
        unfitted.unpersist()
    return featurizer


def _lsa_sample(tf, featurizer: HashingFeaturizer, n_docs: int) -> sp.csr_matrix:
    """Term frequencies of the LSA sample, CSR of shape (m, num_features), m <= lsa_sample_size.

    The executors keep the rows whose :func:`sample_keys` fall below ``LSA_OVERSAMPLE``
    times the sampling share (about that many times the sample reaches the driver, never
    the pool); the driver keeps the ``lsa_sample_size`` smallest keys, in key order.
    """
    size = featurizer.lsa_sample_size
    threshold = min(1.0, LSA_OVERSAMPLE * size / max(n_docs, 1))
    num_features = featurizer.num_features

    def partition_sample(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            keys = sample_keys(batch.column(0).to_numpy())
            keep = np.flatnonzero(keys < threshold)
            if len(keep):
                yield pa.RecordBatch.from_arrays(
                    [pa.array(keys[keep]), *(batch.column(i).take(pa.array(keep)) for i in range(3))],
                    names=["key", "id", "indices", "values"],
                )

    sample = tf.mapInArrow(partition_sample, "key double, id long, indices array<int>, values array<double>")
    table = sample.toArrow()
    order = np.lexsort((table.column("id").to_numpy(), table.column("key").to_numpy()))[:size]
    table = table.take(pa.array(order))
    from al_tasks.ml.sparse import lists_to_csr

    X = lists_to_csr(table.column("indices"), table.column("values"), num_features).astype(np.float64)
    log.info("featurize: LSA sample of %s documents (%s reached the driver)", f"{len(order):,}", f"{table.num_rows:,}")
    return X


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
