"""One typed configuration object for the whole product: :class:`LoopConfig`.

Every setting is a field with a default that runs the shipped demo and with metadata
(section, title, description, bounds, choices): the one source the CLI flags
(``al --help``), the DAG Params (``plugins/al_common.py``) and ``al config`` are
generated from. Values come, in order of precedence, from

1. the defaults below,
2. ``AL_<FIELD NAME IN UPPER CASE>`` environment variables (``AL_BATCH_SIZE=200``),
3. explicit overrides: CLI flags, ``--set name=value``, DAG Params / run conf.

Validation lives here too, so every way in (CLI, environment, Params) is checked the
same way::

    >>> cfg = LoopConfig.from_env({}).with_overrides({"batch_size": "50"})
    >>> cfg.batch_size
    50.0
    >>> LoopConfig(task="..")
    Traceback (most recent call last):
    ...
    al_tasks.errors.ConfigError: task='..': ...
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from al_tasks.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CORPUS = REPO_ROOT / "data" / "cfpb_complaints.csv.gz"
ENV_PREFIX = "AL_"

#: The product taxonomy of the shipped CFPB sample (column ``Product group``).
PRODUCT_GROUPS = (
    "bank_account",
    "consumer_loan",
    "credit_card",
    "credit_reporting",
    "debt_collection",
    "money_transfer",
    "mortgage",
    "other",
    "student_loan",
)

#: Query strategies by name (``al_tasks.ml.strategies`` implements each).
STRATEGY_NAMES = ("margin", "uncertainty", "entropy", "ranked_batch", "balanced_margin", "badge", "random")

#: Sections of the configuration, in the order they are shown.
SECTIONS = {
    "data": "Task and data",
    "features": "Features",
    "tuning": "Tuning and evaluation",
    "query": "Query",
    "loop": "Loop, stop rules and alerts",
    "storage": "Storage: workspace, bucket, MLflow",
    "scoring": "Scoring new complaints",
    "spark": "Spark",
}

#: A task name names folders and S3 prefixes: letters, digits, ``_ . -``, not starting
#: with a dot (so never ``.`` or ``..``).
TASK_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: An S3 prefix: one or more path segments of safe characters.
PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$"


def masked_url(url: str) -> str:
    """``url`` with its password (if any) shown as ``***``: how URLs appear in logs and output.

    >>> masked_url("postgresql+psycopg2://al:example-pw@db:5432/al_labels")
    'postgresql+psycopg2://al:***@db:5432/al_labels'
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user_info, _, host = parts.netloc.rpartition("@")
    user = user_info.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def setting(
    default: object,
    *,
    section: str,
    title: str,
    description: str,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: float | None = None,
    choices: tuple[str, ...] | None = None,
    pattern: str | None = None,
    cli: bool = True,
    aliases: tuple[str, ...] = (),
) -> typing.Any:
    """A :class:`LoopConfig` field with its metadata.

    Parameters
    ----------
    default : the value used when nothing overrides it
    section : one of :data:`SECTIONS`
    title, description : shown in ``al --help``, the Airflow trigger form and ``al config``
    minimum, maximum, exclusive_minimum : numeric bounds (checked on construction)
    choices : allowed values of a string setting
    pattern : regular expression a string setting must match (full match)
    cli : False hides the setting from the CLI flags (it stays settable by ``--set``)
    aliases : more CLI flags for the setting (e.g. ``--corpus`` for ``--corpus-path``)
    """
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}")
    metadata = {
        "section": section,
        "title": title,
        "description": description,
        "minimum": minimum,
        "maximum": maximum,
        "exclusive_minimum": exclusive_minimum,
        "choices": choices,
        "pattern": pattern,
        "cli": cli,
        "aliases": tuple(aliases),
    }
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one active-learning task; see :data:`SECTIONS` and ``al config``."""

    # --- data ----------------------------------------------------------------------
    task: str = setting(
        "product_group",
        section="data",
        title="Task",
        description="Name of the classification task: workspace folder, MLflow experiment and model, "
        "S3 folders <prefix>/<task>/.",
        pattern=TASK_NAME_PATTERN,
    )
    corpus_path: str = setting(
        str(SHIPPED_CORPUS),
        section="data",
        title="Corpus",
        description="Corpus in CFPB export format (CSV, CSV.gz or Parquet) on a path every worker sees.",
        aliases=("--corpus",),
    )
    ingest_workers: int = setting(
        0,
        section="data",
        title="Ingest workers",
        description="Processes that parse a plain CSV corpus in parallel, in byte ranges that start at record "
        "boundaries (same rows, rejects and manifest as one reader); 0 = the cores of a local[N] Spark master "
        "(this machine's CPUs otherwise), 1 = one reader. CSV.gz, Parquet and files under 128 MB use one reader.",
        minimum=0,
    )
    id_column: str = setting(
        "Complaint ID",
        section="data",
        title="Id column",
        description="Column of the corpus with the item id (a whole number).",
    )
    text_column: str = setting(
        "Consumer complaint narrative",
        section="data",
        title="Text column",
        description="Column of the corpus with the text to classify.",
    )
    label_column: str = setting(
        "Product group",
        section="data",
        title="Ground-truth column",
        description="Column with true labels; used only by the simulated labeller and the benchmarks.",
    )
    classes: tuple[str, ...] = setting(
        PRODUCT_GROUPS,
        section="data",
        title="Classes",
        description="Allowed label values; labels outside them are rejected at ingest. "
        "Empty: taken from the seed labels.",
    )
    positive_class: str = setting(
        "",
        section="data",
        title="Positive class",
        description="Binary task: this class against 'rest' (e.g. debt_collection). Empty: multi-class.",
    )
    eval_labels_path: str = setting(
        "",
        section="data",
        title="Evaluation labels",
        description="A CSV (id,label) of a random sample kept only for evaluation. Empty: hold out "
        "eval_fraction of the seed labels on the first round.",
    )
    eval_fraction: float = setting(
        0.25,
        section="data",
        title="Evaluation fraction",
        description="Share of the seed labels held out as the fixed evaluation set (without an evaluation file).",
        exclusive_minimum=0,
        maximum=0.9,
    )

    # --- features ------------------------------------------------------------------
    num_features: int = setting(
        1 << 18,
        section="features",
        title="Hashed features",
        description="HashingTF width: buckets words are hashed into.",
        minimum=2,
    )
    featurizer: str = setting(
        # The faster one (bench/throughput: 10,994 vs 10,043 docs/s at 1M narratives, 8,049 vs
        # 6,425 at 3M) and the one with the feature options below.
        "hashing_vectorizer",
        section="features",
        title="Featurizer",
        description="How texts are tokenized and hashed: hashing_vectorizer (scikit-learn HashingVectorizer in "
        "Spark's Python workers; Spark's tokens, stop words, IDF and L2; faster on 2 cores; the feature options "
        "sublinear_tf, ngram_max and lsa_components) or spark_ml (Spark ML RegexTokenizer, StopWordsRemover, "
        "HashingTF, IDF, Normalizer; different hash buckets).",
        choices=("spark_ml", "hashing_vectorizer"),
    )
    sublinear_tf: bool = setting(
        True,
        section="features",
        title="Sublinear TF",
        description="Weigh 1 + log(tf) instead of the term count tf before IDF (hashing_vectorizer only).",
    )
    ngram_max: int = setting(
        1,
        section="features",
        title="Longest word n-gram",
        description="Hash word n-grams of 1 to this many words: 1 (words) or 2 (words and bigrams); stop words "
        "are removed first (hashing_vectorizer only).",
        minimum=1,
        maximum=2,
    )
    lsa_components: int = setting(
        200,
        section="features",
        title="LSA components",
        description="Append this many dense LSA columns (truncated SVD of the TF-IDF, fitted on a sample of the "
        "whole pool without labels, unit length) to every vector. 0: TF-IDF only (hashing_vectorizer only).",
        minimum=0,
        maximum=1000,
    )
    lsa_sample_size: int = setting(
        20000,
        section="features",
        title="LSA sample size",
        description="Most documents the LSA is fitted on (a fixed sample of the pool, held on the driver); "
        "the transform runs on the executors.",
        minimum=2,
    )
    min_doc_freq: int = setting(
        2,
        section="features",
        title="Minimum document frequency",
        description="Terms in fewer documents than this get IDF 0 (Spark's IDF.minDocFreq).",
        minimum=0,
    )

    # --- tuning --------------------------------------------------------------------
    max_evals: int = setting(
        128,
        section="tuning",
        title="Tuning evaluations",
        description="Hyperopt evaluations per round (nested MLflow runs).",
        minimum=1,
    )
    validation_fraction: float = setting(
        0.2,
        section="tuning",
        title="Validation fraction",
        description="Share of the labels each trial is scored on (stratified by class).",
        exclusive_minimum=0,
        maximum=0.9,
    )
    seed: int = setting(
        42,
        section="tuning",
        title="Random seed",
        description="Seed of the splits, the search and random sampling.",
        minimum=0,
    )
    log_c_low: float = setting(
        -6.0,
        section="tuning",
        title="log(C) low",
        description="Lower bound of the search for log(C) of logistic regression.",
    )
    log_c_high: float = setting(
        9.0,
        section="tuning",
        title="log(C) high",
        # With L2-normalised TF-IDF the best C of the CFPB tasks lies at log C 3.9-8.3 (bench check
        # run): a bound of e^5 sent 41 of 42 rounds into a re-search.
        description="Upper bound of the search for log(C) of logistic regression.",
    )
    c_bound_shifts: int = setting(
        1,
        section="tuning",
        title="C range shifts",
        description="When the best C sits at a bound of its search range, search again this many times "
        "in a range shifted by half its width past that bound (0: never). Each re-search costs "
        "half of max_evals.",
        minimum=0,
    )
    search_class_weight: bool = setting(
        True,
        section="tuning",
        title="Search class weights",
        description="Let the search choose class_weight between none and balanced (False: none only, "
        "as the seed recipe).",
    )
    use_spark_trials: bool = setting(
        False,
        section="tuning",
        title="SparkTrials",
        description="Run hyperopt trials as Spark jobs (SparkTrials) on spark_master instead of in process.",
    )
    spark_trials_parallelism: int = setting(
        2,
        section="tuning",
        title="SparkTrials parallelism",
        description="Trials run at once with SparkTrials.",
        minimum=1,
    )

    # --- query ---------------------------------------------------------------------
    strategy: str = setting(
        "margin",
        section="query",
        title="Query strategy",
        description="How items are picked: margin, uncertainty or entropy (least sure first), "
        "ranked_batch (uncertain and diverse), balanced_margin (margin spread over the predicted "
        "classes, rarest labelled class first), badge (k-means++ on gradient embeddings: uncertain "
        "and diverse), random (baseline).",
        choices=STRATEGY_NAMES,
    )
    batch_size: float = setting(
        100,
        section="query",
        title="Batch size",
        description="Labels asked for per round: a count (>= 1) or a fraction of the pool (< 1).",
        exclusive_minimum=0,
    )
    ranked_batch_candidates: int = setting(
        5000,
        section="query",
        title="Ranked-batch candidates",
        description="ranked_batch, balanced_margin and badge pick the batch from this many of the most "
        "uncertain pool items (at least 5x the batch), because they need pairwise distances or "
        "class quotas.",
        minimum=1,
    )

    # --- loop ----------------------------------------------------------------------
    max_rounds: int = setting(
        10,
        section="loop",
        title="Max rounds",
        description="The loop stops after training this round (no query set is sent for it).",
        minimum=1,
    )
    target_accuracy: float = setting(
        0.90,
        section="loop",
        title="Target accuracy",
        description="The loop stops when the evaluation accuracy reaches this (a target_reached alert is sent).",
        minimum=0,
        maximum=1,
    )
    alert_min_accuracy: float = setting(
        0.60,
        section="loop",
        title="Alert: minimum accuracy",
        description="Alert when a round's evaluation accuracy is below this.",
        minimum=0,
        maximum=1,
    )
    alert_max_drop: float = setting(
        0.03,
        section="loop",
        title="Alert: maximum drop",
        description="Alert when accuracy falls more than this below the previous round's.",
        minimum=0,
        maximum=1,
    )
    max_label_file_mb: float = setting(
        20,
        section="loop",
        title="Largest labelled file (MB)",
        description="A labelled file (CSV or .xlsx) larger than this is refused before it is read "
        "(a query set of 100 complaints is well under 1 MB).",
        exclusive_minimum=0,
    )
    max_label_file_rows: int = setting(
        0,
        section="loop",
        title="Most rows in a labelled file",
        description="A labelled file with more data rows than this is refused while it is read. "
        "0: 50 times the round's query set (at least 1000).",
        minimum=0,
    )
    sensor_timeout_seconds: int = setting(
        7 * 24 * 3600,
        section="loop",
        title="Wait for labels (s)",
        description="How long to wait for the labelled file; then the loop stops (labels stopped "
        "arriving). The wait holds no worker slot.",
        minimum=1,
    )
    sensor_poke_seconds: int = setting(
        30,
        section="loop",
        title="Check inbox every (s)",
        description="How often the inbox is listed while waiting.",
        minimum=1,
    )

    # --- storage -------------------------------------------------------------------
    workspace: str = setting(
        str(REPO_ROOT / "workspace"),
        section="storage",
        title="Workspace",
        description="Folder for features, label store, query sets and round summaries; in a multi-machine "
        "deployment a shared volume every worker and Spark executor mounts.",
    )
    bucket: str = setting(
        "labelling",
        section="storage",
        title="Bucket",
        description="Labelling bucket, reached through the Airflow connection al_s3.",
    )
    seed_prefix: str = setting(
        "seed",
        section="storage",
        title="Seed prefix",
        description="Seed labels are read from <seed>/<task>/labels.csv (+ optional evaluation.csv).",
        pattern=PREFIX_PATTERN,
    )
    outbox_prefix: str = setting(
        "outbox",
        section="storage",
        title="Outbox prefix",
        description="Query sets appear as <outbox>/<task>/round-<n>.csv (+ .manifest.json).",
        pattern=PREFIX_PATTERN,
    )
    inbox_prefix: str = setting(
        "inbox",
        section="storage",
        title="Inbox prefix",
        description="Labelled files are dropped as <inbox>/<task>/round-<n>.csv.",
        pattern=PREFIX_PATTERN,
    )
    processed_prefix: str = setting(
        "processed",
        section="storage",
        title="Processed prefix",
        description="Ingested labelled files are moved to <processed>/<task>/.",
        pattern=PREFIX_PATTERN,
    )
    rejects_prefix: str = setting(
        "rejects",
        section="storage",
        title="Rejects prefix",
        description="Rows refused at ingest are written to <rejects>/<task>/round-<n>.csv.",
        pattern=PREFIX_PATTERN,
    )
    s3_endpoint_url: str = setting(
        "http://127.0.0.1:8333",
        section="storage",
        title="S3 endpoint",
        description="S3-compatible endpoint of the bucket for the CLI and the simulated labeller "
        "(Airflow tasks use the al_s3 connection). Empty: AWS.",
    )
    mlflow_tracking_uri: str = setting(
        "",
        section="storage",
        title="MLflow tracking URI",
        description="Empty: MLFLOW_TRACKING_URI, else a SQLite file in the workspace.",
    )
    label_store_url: str = setting(
        "",
        section="storage",
        title="Label store URL",
        description="SQLAlchemy URL of the label store's database (tables keyed by task, so one database "
        "serves many tasks), e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/al_labels. "
        "Empty: a SQLite file <workspace>/<task>/labels/store.db. Put no password in it (it is a DAG "
        "Param): PostgreSQL reads PGPASSWORD or ~/.pgpass.",
    )
    registered_model_name: str = setting(
        "", section="storage", title="Registered model", description="Name in the MLflow registry. Empty: al-<task>."
    )

    # --- scoring -------------------------------------------------------------------
    escalation_class: str = setting(
        "debt_collection",
        section="scoring",
        title="Escalation class",
        description="Class whose probability decides escalation.",
    )
    escalation_probability: float = setting(
        0.8,
        section="scoring",
        title="Escalation probability",
        description="Escalate a complaint when P(escalation_class) >= this.",
        minimum=0,
        maximum=1,
    )
    review_uncertainty: float = setting(
        0.4,
        section="scoring",
        title="Review uncertainty",
        description="Send a complaint to review when 1 - max class probability >= this "
        "(at most 0.5 for a binary model).",
        minimum=0,
        maximum=1,
    )

    # --- spark ---------------------------------------------------------------------
    spark_master: str = setting(
        "local[*]",
        section="spark",
        title="Spark master",
        description="local[*], or spark://host:7077 for a standalone cluster.",
    )
    spark_driver_memory: str = setting(
        "4g", section="spark", title="Driver memory", description="spark.driver.memory of the tasks' Spark driver."
    )
    spark_shuffle_partitions: int = setting(
        8, section="spark", title="Shuffle partitions", description="spark.sql.shuffle.partitions.", minimum=1
    )
    spark_driver_host: str = setting(
        "127.0.0.1",
        section="spark",
        title="Driver host",
        description="Address the driver binds and advertises to executors.",
    )
    spark_queue: str = setting(
        "default",
        section="spark",
        title="Spark task queue",
        description="Celery queue of the Spark-heavy tasks (featurize, tune, query, daily scoring); "
        "read where the DAG files are parsed. 'default' runs them with every other task.",
    )
    spark_ui: bool = setting(False, section="spark", title="Spark UI", description="Start the Spark UI of the driver.")
    spark_log_level: str = setting(
        "ERROR",
        section="spark",
        title="Spark log level",
        description="Log level of Spark's own logger.",
        choices=("ERROR", "WARN", "INFO", "DEBUG"),
    )

    # ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_field(f, getattr(self, f.name))
        if self.log_c_low >= self.log_c_high:
            raise ConfigError(f"log_c_low={self.log_c_low} must be below log_c_high={self.log_c_high}")
        self._check_prefixes()
        self._check_feature_options()
        if self.positive_class and self.classes != (self.positive_class, "rest"):
            # A binary task relabels everything else as "rest".
            object.__setattr__(self, "classes", (self.positive_class, "rest"))

    def _check_feature_options(self) -> None:
        """The feature options live in the scikit-learn featurizer only."""
        uses_options = self.sublinear_tf or self.ngram_max != 1 or self.lsa_components > 0
        if uses_options and self.featurizer != "hashing_vectorizer":
            raise ConfigError(
                f"featurizer={self.featurizer!r} with sublinear_tf={self.sublinear_tf}, ngram_max={self.ngram_max}, "
                f"lsa_components={self.lsa_components}: feature options sublinear_tf/ngram_max/lsa_components "
                "need featurizer='hashing_vectorizer'; with spark_ml set sublinear_tf=false, ngram_max=1 and "
                "lsa_components=0"
            )
        if self.lsa_components and self.lsa_components >= self.lsa_sample_size:
            raise ConfigError(
                f"lsa_components={self.lsa_components} must be below lsa_sample_size={self.lsa_sample_size}"
            )

    def _check_prefixes(self) -> None:
        """The bucket's folders must be distinct and none inside another: an outbox that
        is the inbox would have the sensor fire on the unlabelled query set.
        """
        named = {name: PurePosixPath(getattr(self, name).strip("/")) for name in PREFIX_FIELDS}
        for a, path_a in named.items():
            for b, path_b in named.items():
                if a < b and (path_a == path_b or path_a in path_b.parents or path_b in path_a.parents):
                    raise ConfigError(
                        f"{a}={str(path_a)!r} and {b}={str(path_b)!r}: the bucket's prefixes "
                        "must be distinct and none inside another"
                    )

    # --- derived ---------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self.registered_model_name or f"al-{self.task}"

    @property
    def experiment_name(self) -> str:
        return f"active-learning/{self.task}"

    def batch_count(self, pool_size: int) -> int:
        """Labels to ask for from a pool of ``pool_size`` items (at least 1)."""
        if self.batch_size < 1:
            return max(1, int(round(self.batch_size * pool_size)))
        return int(self.batch_size)

    def label_file_row_limit(self, query_size: int) -> int:
        """Most data rows accepted in a labelled file for a query set of ``query_size`` items."""
        return self.max_label_file_rows or max(1000, 50 * int(query_size))

    def task_prefix(self, prefix_field: str) -> str:
        """``"<prefix>/<task>/"`` for one of :data:`PREFIX_FIELDS` (e.g. ``"inbox_prefix"``)."""
        if prefix_field not in PREFIX_FIELDS:
            raise ValueError(f"{prefix_field!r} is not one of {PREFIX_FIELDS}")
        return f"{getattr(self, prefix_field).strip('/')}/{self.task}/"

    # --- construction ----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LoopConfig:
        """Defaults overridden by ``AL_*`` environment variables."""
        environ = os.environ if environ is None else environ
        values = {
            f.name: environ[ENV_PREFIX + f.name.upper()]
            for f in dataclasses.fields(cls)
            if ENV_PREFIX + f.name.upper() in environ
        }
        return cls().with_overrides(values)

    def with_overrides(self, overrides: Mapping[str, object] | None) -> LoopConfig:
        """A copy with ``overrides`` applied; strings are coerced to each field's type.

        Unknown keys are ignored, so a DAG's Params may carry extra entries (e.g.
        ``round``); ``None`` means "keep the current value". Raises :class:`ConfigError`.
        """
        if not overrides:
            return self
        hints = field_types()
        changes = {}
        for key, value in overrides.items():
            if key not in hints or value is None:
                continue
            try:
                changes[key] = coerce(value, hints[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key}={value!r}: {exc}") from exc
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


#: The bucket prefix settings (checked to be distinct, see ``LoopConfig._check_prefixes``).
PREFIX_FIELDS = ("seed_prefix", "outbox_prefix", "inbox_prefix", "processed_prefix", "rejects_prefix")


@dataclass(frozen=True)
class SettingInfo:
    """A setting's name, Python type and metadata, as the generators use them."""

    name: str
    kind: type | object
    default: object
    section: str
    title: str
    description: str
    minimum: float | None
    maximum: float | None
    exclusive_minimum: float | None
    choices: tuple[str, ...] | None
    pattern: str | None
    cli: bool
    aliases: tuple[str, ...]

    @property
    def flag(self) -> str:
        """The CLI flag: ``--batch-size``."""
        return "--" + self.name.replace("_", "-")

    @property
    def flags(self) -> tuple[str, ...]:
        """Every CLI flag of the setting (:attr:`flag` first)."""
        return (self.flag, *self.aliases)

    @property
    def type_name(self) -> str:
        return {str: "text", int: "whole number", float: "number", bool: "true/false"}.get(
            self.kind, "comma-separated list"
        )  # type: ignore[call-overload]


def field_types() -> dict[str, object]:
    """Field name -> Python type annotation of every setting."""
    return typing.get_type_hints(LoopConfig)


def settings() -> list[SettingInfo]:
    """Every setting of :class:`LoopConfig` with its metadata, in declaration order."""
    hints = field_types()
    return [
        SettingInfo(name=f.name, kind=hints[f.name], default=f.default, **f.metadata)
        for f in dataclasses.fields(LoopConfig)
    ]


def _check_field(f: dataclasses.Field, value: object) -> None:
    meta = f.metadata
    name = f.name
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{name}={value!r}: choose one of {list(meta['choices'])}")
    if meta.get("pattern") and not re.fullmatch(meta["pattern"], str(value)):
        raise ConfigError(
            f"{name}={value!r}: must match {meta['pattern']} (letters, digits, '_', '.', '-'; not starting with a dot)"
        )
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("exclusive_minimum")
        if low is not None and value < low:
            raise ConfigError(f"{name}={value}: must be >= {low}")
        if high is not None and value > high:
            raise ConfigError(f"{name}={value}: must be <= {high}")
        if above is not None and value <= above:
            raise ConfigError(f"{name}={value}: must be > {above}")


def coerce(value: object, kind: object) -> object:
    """``value`` (often a string from the environment or a CLI flag) as type ``kind``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError("expected a boolean")
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError("expected a whole number")
        return int(number)  # type: ignore[arg-type]
    if kind is float:
        return float(value)  # type: ignore[arg-type]
    if kind is str:
        return str(value)
    if typing.get_origin(kind) is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[arg-type]
        return tuple(str(v).strip() for v in items if str(v).strip())
    raise TypeError(f"unsupported setting type {kind}")
