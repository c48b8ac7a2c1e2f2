"""Featurize: text -> sparse TF-IDF vectors, on Spark.

Two featurizers (``LoopConfig.featurizer``): ``hashing_vectorizer`` (the default,
scikit-learn's hasher in Spark's Python workers, with the feature options sublinear TF,
word bigrams and an LSA block learned from the pool: :mod:`al_tasks.ml.hashing`) and
``spark_ml``, the Spark ML pipeline below.

Pipeline (one Spark ``PipelineModel``, fitted once on the whole corpus, labelled and
unlabelled alike, and saved for reuse by every round and by the scorers)::

    RegexTokenizer(text -> tokens)          lower-cased words of 2+ letters
    StopWordsRemover(tokens -> words)       Spark's English list + CFPB redactions (xxxx)
    HashingTF(words -> tf)                  num_features buckets, hashes the *filtered* words
    IDF(tf -> tfidf)                        min_doc_freq
    Normalizer(tfidf -> features, p=2)      unit length, so C means the same for short and long texts

Features are written as Parquet keyed by ``id`` and stay sparse into scikit-learn
(``scipy.sparse.csr_matrix``); they are never densified.

A run is keyed by a fingerprint of the corpus file's bytes and the featurize settings:
if ``<workspace>/<task>/features/<fingerprint>/_SUCCESS`` exists, nothing is refitted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import scipy.sparse as sp

from al_tasks.config import LoopConfig
from al_tasks.errors import FeaturesNotFoundError
from al_tasks.io.atomic import atomic_write_text
from al_tasks.ml.sparse import vectors_to_csr
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)

#: Tokens the CFPB uses to redact personal data; frequent and meaningless.
REDACTION_TOKENS = ["xx", "xxx", "xxxx", "xxxxxxxx"]
#: Bump when the pipeline's stages change, so old fingerprints are not reused.
#: 3: the feature options (sublinear TF, n-grams, LSA) of the scikit-learn featurizer.
PIPELINE_VERSION = 3


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Where one featurized corpus lives.

    Attributes
    ----------
    root : Path, ``<workspace>/<task>/features/<fingerprint>``
    fingerprint : str
    num_features : int, width of every vector (the hashed buckets plus any LSA columns:
        :func:`pipeline_width` of the saved featurizer)
    n_docs : int
    reused : bool, True when this call refitted nothing
    seconds : float, wall time of this call
    """

    root: Path
    fingerprint: str
    num_features: int
    n_docs: int
    reused: bool = False
    seconds: float = 0.0
    docs_root: Path | None = None

    @property
    def features_path(self) -> Path:
        return self.root / "features.parquet"

    @property
    def pipeline_path(self) -> Path:
        return self.root / "pipeline"

    @property
    def docs_path(self) -> Path:
        """Parquet (id, text) of every featurized document: query sets show the text.

        The ingested corpus dataset (texts are stored once); ``docs.parquet`` beside the
        features in feature sets written before the streaming ingest.
        """
        return self.docs_root if self.docs_root is not None else self.root / "docs.parquet"

    @classmethod
    def load(cls, root: str | Path) -> FeatureSet:
        root = Path(root)
        if not (root / "_SUCCESS").exists():
            raise FeaturesNotFoundError(f"{root} holds no complete feature set: run featurize first")
        manifest = json.loads((root / "manifest.json").read_text())
        docs_root = Path(manifest["docs_path"]) if manifest.get("docs_path") else None
        return cls(
            root=root,
            fingerprint=manifest["fingerprint"],
            num_features=manifest["num_features"],
            n_docs=manifest["n_docs"],
            reused=True,
            docs_root=docs_root if docs_root is None or docs_root.exists() else None,
        )

    @property
    def additions_root(self) -> Path:
        """Pool additions (new complaints featurized with the saved pipeline), one folder
        per key (e.g. a date): ``additions/<key>/{features,docs}.parquet``.
        """
        return self.root / "additions"

    def addition_dirs(self) -> list[Path]:
        if not self.additions_root.exists():
            return []
        return sorted(p for p in self.additions_root.iterdir() if (p / "_SUCCESS").exists())

    def feature_paths(self) -> list[Path]:
        """The corpus features plus every complete pool addition."""
        return [self.features_path] + [p / "features.parquet" for p in self.addition_dirs()]

    def docs_paths(self) -> list[Path]:
        return [self.docs_path] + [p / "docs.parquet" for p in self.addition_dirs()]

    def _docs_dataset(self) -> ds.Dataset:
        return ds.dataset([ds.dataset(str(p), format="parquet") for p in self.docs_paths()])

    def ids(self) -> np.ndarray:
        """All document ids (corpus and pool additions), int64."""
        return self._docs_dataset().to_table(columns=["id"]).column("id").to_numpy()

    def texts(self, ids: np.ndarray | None = None) -> pd.DataFrame:
        """DataFrame (id, text) for ``ids`` (all when None)."""
        flt = None if ids is None else ds.field("id").isin(pa.array(np.asarray(ids, dtype=np.int64)))
        return self._docs_dataset().to_table(filter=flt).to_pandas()


def stop_words() -> list[str]:
    """Spark's English stop words plus the CFPB redactions (needs a running SparkContext)."""
    from pyspark.ml.feature import StopWordsRemover

    return StopWordsRemover.loadDefaultStopWords("english") + REDACTION_TOKENS


def build_pipeline(config: LoopConfig):
    """The unfitted Spark ML ``Pipeline`` described in the module docstring."""
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import IDF, HashingTF, Normalizer, RegexTokenizer, StopWordsRemover

    stop_words = StopWordsRemover.loadDefaultStopWords("english") + REDACTION_TOKENS
    return Pipeline(
        stages=[
            RegexTokenizer(inputCol="text", outputCol="tokens", pattern="[a-z][a-z']+", gaps=False, toLowercase=True),
            StopWordsRemover(inputCol="tokens", outputCol="words", stopWords=stop_words),
            HashingTF(inputCol="words", outputCol="tf", numFeatures=config.num_features),
            IDF(inputCol="tf", outputCol="tfidf", minDocFreq=config.min_doc_freq),
            Normalizer(inputCol="tfidf", outputCol="features", p=2.0),
        ]
    )


def fingerprint(corpus_path: str | Path, config: LoopConfig) -> str:
    """Key of a feature set: the corpus (bytes and reader settings) and every featurize setting."""
    from al_tasks.io.corpus import corpus_fingerprint, scan_file

    return features_fingerprint(corpus_fingerprint(scan_file(corpus_path)[0], config), config)


def features_fingerprint(corpus_fp: str, config: LoopConfig) -> str:
    """Key of a feature set from the corpus fingerprint (:func:`~al_tasks.io.corpus.corpus_fingerprint`)."""
    settings = {
        "version": PIPELINE_VERSION,
        "corpus": corpus_fp,
        "num_features": config.num_features,
        "min_doc_freq": config.min_doc_freq,
        "featurizer": config.featurizer,
        "sublinear_tf": config.sublinear_tf,
        "ngram_max": config.ngram_max,
        "lsa_components": config.lsa_components,
        # The sample size shapes the vectors only when there is an LSA block.
        "lsa_sample_size": config.lsa_sample_size if config.lsa_components else 0,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def feature_root(config: LoopConfig) -> Path:
    """The folder of the features of ``config``'s corpus and settings (may not exist yet)."""
    return TaskWorkspace(config).feature_dir(fingerprint(config.corpus_path, config))


def current_feature_set(config: LoopConfig) -> FeatureSet | None:
    """The complete feature set of ``config``'s corpus and settings, or None (no Spark)."""
    root = feature_root(config)
    return FeatureSet.load(root) if (root / "_SUCCESS").exists() else None


def featurize(
    config: LoopConfig,
    spark=None,
    *,
    corpus_path: str | Path | None = None,
    chunk_rows: int | None = None,
    progress_seconds: float = 10.0,
) -> FeatureSet:
    """Fit the pipeline on the corpus and write features, unless already done.

    The corpus is first streamed into the workspace as a Parquet dataset
    (:func:`~al_tasks.io.corpus.ingest_corpus`, ``chunk_rows`` records at a time); Spark
    reads that dataset, tokenizes and hashes it once (term frequencies are kept on the
    executors' disk between fitting the IDF and transforming) and writes the features.
    No document passes through the driver. Progress (docs done, docs/s, ETA) is logged
    every ``progress_seconds``.

    Returns the :class:`FeatureSet`. Rejected corpus rows are in ``rejects.csv`` beside
    the features (line, id, reason).
    """
    from al_tasks.io.corpus import ingest_corpus

    started = time.perf_counter()
    ingested = ingest_corpus(config, corpus_path, chunk_rows=chunk_rows, progress_seconds=progress_seconds)
    fp = features_fingerprint(ingested.fingerprint, config)
    root = TaskWorkspace(config).feature_dir(fp)
    if (root / "_SUCCESS").exists():
        fs = FeatureSet.load(root)
        log.info("featurize: reusing %s (%s docs, fingerprint %s)", root, fs.n_docs, fp)
        return dataclasses.replace(fs, seconds=time.perf_counter() - started)
    if root.exists():  # a half-written earlier attempt
        shutil.rmtree(root)
    root.mkdir(parents=True)
    shutil.copyfile(ingested.rejects_path, root / "rejects.csv")

    from al_tasks.spark import spark_session

    spark = spark or spark_session(config)
    with SparkProgress(spark, ingested.n_docs, progress_seconds):
        if config.featurizer == "hashing_vectorizer":
            from al_tasks.ml.hashing import HashingFeaturizer, fit_and_write

            featurizer = HashingFeaturizer.from_config(config, stop_words())
            width = fit_and_write(featurizer, spark, ingested.docs_path, root).width
        else:
            _fit_and_write(config, spark, ingested.docs_path, root)
            width = config.num_features
    manifest = _manifest(config, fp, ingested, width)
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=2))
    (root / "_SUCCESS").touch()
    seconds = time.perf_counter() - started
    log.info("featurize: wrote %s in %.1fs (%s docs/s)", root, seconds, f"{ingested.n_docs / seconds:,.0f}")
    return FeatureSet(
        root=root,
        fingerprint=fp,
        num_features=width,
        n_docs=ingested.n_docs,
        seconds=seconds,
        docs_root=ingested.docs_path,
    )


def _manifest(config: LoopConfig, fp: str, ingested, width: int) -> dict:
    """The feature set's manifest; ``num_features`` is the vector width (hashed buckets + LSA columns)."""
    return {
        "fingerprint": fp,
        "corpus_path": str(ingested.manifest["source"]),
        "corpus_fingerprint": ingested.fingerprint,
        "docs_path": str(ingested.docs_path),
        "num_features": width,
        "hashed_features": config.num_features,
        "min_doc_freq": config.min_doc_freq,
        "featurizer": config.featurizer,
        "sublinear_tf": config.sublinear_tf,
        "ngram_max": config.ngram_max,
        "lsa_components": config.lsa_components,
        "lsa_sample_size": config.lsa_sample_size,
        "n_docs": ingested.n_docs,
        "n_rejected": int(ingested.manifest["rejected"]),
        "n_without_narrative": int(ingested.manifest["without_narrative"]),
        "pipeline_version": PIPELINE_VERSION,
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def _fit_and_write(config: LoopConfig, spark, docs_path: Path, root: Path) -> None:
    """One tokenize/hash pass over the dataset: TF kept on disk, IDF fitted on it, then transformed."""
    from pyspark import StorageLevel
    from pyspark.ml import PipelineModel

    docs = spark.read.parquet(str(docs_path)).select("id", "text")
    if docs.rdd.getNumPartitions() < spark.sparkContext.defaultParallelism:
        docs = docs.repartition(spark.sparkContext.defaultParallelism)  # a small corpus: one file
    tokenize, remove, hashing, idf, normalize = build_pipeline(config).getStages()
    tf = PipelineModel([tokenize, remove, hashing]).transform(docs).select("id", "tf")
    tf = tf.persist(StorageLevel.DISK_ONLY)
    try:
        spark.sparkContext.setJobDescription("featurize: tokenize, hash, fit IDF")
        idf_model = idf.fit(tf)
        PipelineModel([tokenize, remove, hashing, idf_model, normalize]).write().overwrite().save(
            str(root / "pipeline")
        )
        spark.sparkContext.setJobDescription("featurize: IDF, normalise, write")
        features = PipelineModel([idf_model, normalize]).transform(tf).select("id", "features")
        features.write.mode("overwrite").parquet(str(root / "features.parquet"))
    finally:
        spark.sparkContext.setJobDescription(None)
        tf.unpersist()


class SparkProgress:
    """Log docs done, docs/s and ETA of the running Spark jobs every ``every`` seconds.

    A daemon thread reads the ``StatusTracker``: the share of finished tasks of the
    active stages, times ``n_docs``, is the documents done of the current pass.
    """

    def __init__(self, spark, n_docs: int, every: float = 10.0):
        self.tracker = spark.sparkContext.statusTracker()
        self.n_docs = n_docs
        self.every = every
        self.reports: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="featurize-progress", daemon=True)

    def __enter__(self) -> SparkProgress:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.report()
            except Exception as exc:  # progress must never fail the job
                log.debug("featurize progress: %s", exc)

    def report(self) -> dict | None:
        stages = [self.tracker.getStageInfo(s) for s in self.tracker.getActiveStageIds()]
        stages = [s for s in stages if s is not None and s.numTasks]
        if not stages:
            return None
        done_share = sum(s.numCompletedTasks for s in stages) / sum(s.numTasks for s in stages)
        elapsed = time.perf_counter() - self.started
        docs_done = int(done_share * self.n_docs)
        rate = docs_done / elapsed if elapsed > 0 else 0.0
        eta = (self.n_docs - docs_done) / rate if rate > 0 else float("nan")
        row = {"docs_done": docs_done, "docs_per_s": rate, "eta_s": eta, "stage": stages[0].name}
        self.reports.append(row)
        log.info(
            "featurize: %s of %s docs (%s docs/s, ETA %s s) [%s]",
            f"{docs_done:,}",
            f"{self.n_docs:,}",
            f"{rate:,.0f}",
            "?" if eta != eta else f"{eta:.0f}",
            stages[0].name[:60],
        )
        return row


#: Rows decoded at a time when :func:`load_features` picks rows by id: bounds the
#: driver's memory whatever the pool size (one batch of vectors, not the whole column).
READ_BATCH_ROWS = 16_384


@dataclasses.dataclass
class FeatureReads:
    """What one :func:`load_features` call by ids read, to show its memory is bounded.

    Attributes
    ----------
    rows_decoded : feature vectors decoded (batches of the row groups that hold a wanted id)
    rows_kept : vectors kept in memory (the wanted ids, each once)
    largest_batch_rows : most vectors decoded at once (at most :data:`READ_BATCH_ROWS`)
    row_groups_read, row_groups_skipped : Parquet row groups decoded / skipped on their id statistics
    """

    rows_decoded: int = 0
    rows_kept: int = 0
    largest_batch_rows: int = 0
    row_groups_read: int = 0
    row_groups_skipped: int = 0


def load_features(
    feature_set: FeatureSet,
    ids: np.ndarray | list | None = None,
    *,
    batch_rows: int | None = None,
    reads: FeatureReads | None = None,
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Read features into memory, without Spark.

    With ``ids``, the files are read one batch of ``batch_rows`` rows at a time and only
    the wanted rows are kept (as CSR, right away), so memory grows with the ids asked
    for, not with the pool; row groups whose id range holds no wanted id are skipped.

    Parameters
    ----------
    ids : optional int64 ids to load, in that order; unknown ids raise ``KeyError``.
    batch_rows : rows decoded at a time (default :data:`READ_BATCH_ROWS`)
    reads : when given, filled in with what was read (:class:`FeatureReads`)

    Returns
    -------
    (ids, X) : int64 array of shape (n,), CSR float32 of shape (n, num_features)
    """
    if ids is None:
        dataset = ds.dataset([ds.dataset(str(p), format="parquet") for p in feature_set.feature_paths()])
        table = dataset.to_table(columns=["id", "features"])
        return table.column("id").to_numpy(), vectors_to_csr(table.column("features"), feature_set.num_features)
    wanted = np.asarray(ids, dtype=np.int64)
    unique = np.unique(wanted)
    reads = reads if reads is not None else FeatureReads()
    found_ids: list[np.ndarray] = []
    found_rows: list[sp.csr_matrix] = []
    for path in feature_set.feature_paths():
        for file in ds.dataset(str(path), format="parquet").files:
            for ids_part, X_part in _rows_with_ids(file, unique, feature_set.num_features, batch_rows, reads):
                found_ids.append(ids_part)
                found_rows.append(X_part)
    found = np.concatenate(found_ids) if found_ids else np.zeros(0, dtype=np.int64)
    missing = np.setdiff1d(unique, found)
    if len(missing):
        raise KeyError(f"{len(missing)} id(s) not in {feature_set.features_path}: {missing[:10].tolist()}")
    if not found_rows:
        return wanted, sp.csr_matrix((0, feature_set.num_features), dtype=np.float32)
    X = sp.vstack(found_rows, format="csr") if len(found_rows) > 1 else found_rows[0]
    reads.rows_kept += len(found)
    # Rows come in file order; put them in the order asked for (repeats allowed).
    order = np.argsort(found, kind="stable")
    return wanted, X[order[np.searchsorted(found[order], wanted)]]


def _rows_with_ids(
    file: str, unique_ids: np.ndarray, num_features: int, batch_rows: int | None, reads: FeatureReads
) -> Iterator[tuple[np.ndarray, sp.csr_matrix]]:
    """(ids, CSR) of the rows of one Parquet file whose id is in ``unique_ids`` (sorted), batch by batch."""
    # Buffered page reads instead of pre-buffering whole column chunks: a row group of
    # Spark's (up to 128 MB compressed) is not held at once (measured: Arrow's peak
    # 166 -> 65 MiB for 6,230 ids of a 1M pool, same speed).
    parquet = pq.ParquetFile(file, buffer_size=1 << 20, pre_buffer=False)
    id_column = parquet.schema_arrow.get_field_index("id")
    row_groups = []
    for number in range(parquet.metadata.num_row_groups):
        stats = parquet.metadata.row_group(number).column(id_column).statistics
        if stats is not None and stats.has_min_max:
            # Some wanted id lies in [min, max] iff the two insertion points differ.
            first = np.searchsorted(unique_ids, stats.min, side="left")
            if np.searchsorted(unique_ids, stats.max, side="right") == first:
                reads.row_groups_skipped += 1
                continue
        row_groups.append(number)
    reads.row_groups_read += len(row_groups)
    if not row_groups:
        return
    batches = parquet.iter_batches(
        batch_size=batch_rows or READ_BATCH_ROWS, row_groups=row_groups, columns=["id", "features"]
    )
    for batch in batches:
        reads.rows_decoded += batch.num_rows
        reads.largest_batch_rows = max(reads.largest_batch_rows, batch.num_rows)
        batch_ids = batch.column(0).to_numpy()
        keep = np.flatnonzero(np.isin(batch_ids, unique_ids, assume_unique=False))
        if len(keep):
            yield batch_ids[keep], vectors_to_csr(batch.column(1).take(pa.array(keep)), num_features)


def add_to_pool(
    feature_set: FeatureSet, key: str, docs: pd.DataFrame, spark=None, config: LoopConfig | None = None
) -> tuple[int, pd.DataFrame]:
    """Featurize new documents with the saved pipeline and add them to the pool.

    ``docs``: DataFrame (id int64, text str). The addition lives in
    ``additions/<key>/`` and replaces whatever that key held before, so re-running a
    date never duplicates pool rows. Ids already in the corpus or in another addition
    are not added; they come back as rejects (id, reason).

    Returns (rows added, rejects DataFrame).
    """
    target = feature_set.additions_root / key
    if target.exists():
        shutil.rmtree(target)  # replaced as a whole: idempotent re-runs
    known = feature_set.ids()
    docs = docs.drop_duplicates("id")
    clash = np.isin(docs["id"].to_numpy(dtype=np.int64), known)
    rejects = pd.DataFrame({"id": docs["id"].to_numpy()[clash], "reason": "id already in the pool or corpus"})
    fresh = docs.loc[~clash, ["id", "text"]].reset_index(drop=True)
    if fresh.empty:
        return 0, rejects
    target.mkdir(parents=True)
    _ids, _X = transform_texts(feature_set.pipeline_path, fresh, spark=spark, config=config, keep_dir=target)
    fresh.to_parquet(target / "docs.parquet", index=False)
    (target / "_SUCCESS").touch()
    return len(fresh), rejects


def transform_texts(
    pipeline, docs: pd.DataFrame, spark=None, config: LoopConfig | None = None, keep_dir: str | Path | None = None
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Apply the saved featurizer to new documents: the one way new texts become vectors.

    Parameters
    ----------
    pipeline : the featurizer's folder (``FeatureSet.pipeline_path``) or the loaded model
    docs : DataFrame with columns ``id`` (int64) and ``text`` (str), shape (n, >= 2)
    spark : SparkSession (default: one for ``config``)
    keep_dir : when given, the features also stay there as ``features.parquet``

    Returns
    -------
    (ids, X) : int64 array of shape (n,), CSR float32 of shape (n, width), width =
        :func:`pipeline_width` of the featurizer
    """
    from al_tasks.ml.hashing import HashingFeaturizer
    from al_tasks.spark import spark_session

    model = pipeline if hasattr(pipeline, "transform") else load_pipeline(pipeline)
    num_features = pipeline_width(model)
    if len(docs) == 0:
        return np.zeros(0, dtype=np.int64), sp.csr_matrix((0, num_features), dtype=np.float32)
    if isinstance(model, HashingFeaturizer):
        return _transform_here(model, docs, keep_dir)
    with tempfile.TemporaryDirectory(prefix="al-transform-") as tmp:
        # Through Parquet, because Arrow collection does not carry Spark's VectorUDT.
        out_dir = str(Path(keep_dir or tmp) / "features.parquet")
        spark = spark or spark_session(config)
        frame = spark.createDataFrame(docs[["id", "text"]], schema="id LONG, text STRING")
        out = model.transform(frame).select("id", "features")
        out.write.mode("overwrite").parquet(out_dir)
        table = ds.dataset(out_dir, format="parquet").to_table()
    return table.column("id").to_numpy(), vectors_to_csr(table.column("features"), num_features)


def _transform_here(featurizer, docs: pd.DataFrame, keep_dir) -> tuple[np.ndarray, sp.csr_matrix]:
    """The scikit-learn featurizer on new texts, in this process (a day's or a batch's complaints)."""
    from al_tasks.ml.hashing import features_table

    ids = docs["id"].to_numpy(dtype=np.int64)
    X = featurizer.transform(docs["text"].astype(str).tolist())
    if keep_dir is not None:
        pq.write_table(features_table(ids, X), Path(keep_dir) / "features.parquet")
    return ids, X


def load_pipeline(pipeline_path: str | Path):
    """The saved featurizer: a Spark ``PipelineModel`` or a :class:`~al_tasks.ml.hashing.HashingFeaturizer`."""
    from al_tasks.ml.hashing import HashingFeaturizer

    if not Path(pipeline_path).exists():
        raise FeaturesNotFoundError(f"no saved featurizer at {pipeline_path}: run featurize first")
    if HashingFeaturizer.is_saved_at(pipeline_path):
        return HashingFeaturizer.load(pipeline_path)
    from pyspark.ml import PipelineModel

    return PipelineModel.load(str(pipeline_path))


def pipeline_width(model) -> int:
    """Width of the vectors a saved featurizer produces: a HashingFeaturizer's
    :attr:`~al_tasks.ml.hashing.HashingFeaturizer.width` (buckets plus LSA columns), a
    Spark pipeline's HashingTF numFeatures.
    """
    if hasattr(model, "width"):
        return int(model.width)
    return next(stage.getNumFeatures() for stage in model.stages if hasattr(stage, "getNumFeatures"))
