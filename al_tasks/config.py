"""One typed configuration object for the whole loop.

Every setting has a documented default, can be overridden by an environment variable
(``AL_<FIELD NAME IN UPPER CASE>``, e.g. ``AL_BATCH_SIZE=200``) and, inside Airflow,
by a DAG Param of the same name. Precedence: defaults < environment < explicit overrides.

    >>> cfg = LoopConfig.from_env().with_overrides({"batch_size": "50"})
    >>> cfg.batch_size
    50
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CORPUS = REPO_ROOT / "data" / "cfpb_complaints.csv.gz"

# The product taxonomy of the shipped CFPB sample (column ``Product group``).
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

ENV_PREFIX = "AL_"


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class LoopConfig:
    """Settings of one active-learning task.

    Attributes are grouped by stage; each has a default that runs the shipped demo.
    """

    # --- task and data -------------------------------------------------------------
    #: Short name of the classification task; names the workspace folder, the MLflow
    #: experiment and registered model, and the S3 prefixes.
    task: str = "product_group"
    #: Corpus in CFPB export format (CSV, optionally gzipped, or Parquet).
    corpus_path: str = str(SHIPPED_CORPUS)
    id_column: str = "Complaint ID"
    text_column: str = "Consumer complaint narrative"
    #: Ground-truth column, used only by the simulated labeller and the benchmarks.
    label_column: str = "Product group"
    #: Allowed label values. Empty: taken from the seed labels on the first round.
    classes: tuple[str, ...] = PRODUCT_GROUPS
    #: For a binary task built from a multi-class column: this value is the positive
    #: class and every other value becomes ``rest`` (e.g. ``debt_collection``).
    positive_class: str = ""
    #: Local folder for features, label store, query sets and the MLflow SQLite DB.
    workspace: str = str(REPO_ROOT / "workspace")

    # --- Spark ---------------------------------------------------------------------
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    spark_shuffle_partitions: int = 8

    # --- featurize -----------------------------------------------------------------
    num_features: int = 1 << 18
    #: Terms in fewer documents than this get IDF 0 (Spark's IDF.minDocFreq).
    min_doc_freq: int = 2
    #: Also hash word bigrams (after stop-word removal) next to unigrams.
    use_bigrams: bool = True

    # --- tune ----------------------------------------------------------------------
    max_evals: int = 128
    validation_fraction: float = 0.2
    seed: int = 42
    #: Run hyperopt trials as Spark jobs (SparkTrials) instead of local Trials.
    use_spark_trials: bool = False
    spark_trials_parallelism: int = 2
    #: Search space for log(C) of LogisticRegression (hyperopt loguniform bounds).
    log_c_low: float = -6.0
    log_c_high: float = 1.0

    # --- evaluate ------------------------------------------------------------------
    #: Labelled CSV (id,label) of a random sample kept only for evaluation. Empty: hold
    #: out ``eval_fraction`` of the seed labels on the first round.
    eval_labels_path: str = ""
    eval_fraction: float = 0.25

    # --- query ---------------------------------------------------------------------
    #: uncertainty | margin | entropy | ranked_batch | random
    strategy: str = "margin"
    #: Labels asked for per round: a count (>= 1) or a fraction of the pool (< 1).
    batch_size: float = 100
    #: Ranked batch runs on this many of the most uncertain pool items (at least 5x the
    #: batch), because it needs pairwise distances.
    ranked_batch_candidates: int = 5000

    # --- flag ----------------------------------------------------------------------
    #: Escalate a row when P(escalation_class) >= this.
    escalation_probability: float = 0.8
    escalation_class: str = "debt_collection"
    #: Send a row to review when modAL's classifier_uncertainty (1 - max proba) >= this.
    #: For a binary model it is at most 0.5.
    review_uncertainty: float = 0.4

    # --- loop and alerts -------------------------------------------------------------
    max_rounds: int = 10
    target_accuracy: float = 0.90
    #: Alert when evaluation accuracy is below this ...
    alert_min_accuracy: float = 0.60
    #: ... or dropped more than this from the previous round.
    alert_max_drop: float = 0.03

    # --- S3 labelling bucket -----------------------------------------------------------
    bucket: str = "labelling"
    outbox_prefix: str = "outbox"
    inbox_prefix: str = "inbox"
    processed_prefix: str = "processed"
    s3_endpoint_url: str = "http://127.0.0.1:8333"
    sensor_timeout_seconds: int = 7 * 24 * 3600
    sensor_poke_seconds: int = 30

    # --- MLflow --------------------------------------------------------------------
    #: Empty: a SQLite file in the workspace (overridden by MLFLOW_TRACKING_URI).
    mlflow_tracking_uri: str = ""
    #: Empty: ``al-<task>``.
    registered_model_name: str = ""

    # ---------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        strategies = {"uncertainty", "margin", "entropy", "ranked_batch", "random"}
        if self.strategy not in strategies:
            raise ConfigError(f"strategy={self.strategy!r}: choose one of {sorted(strategies)}")
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size={self.batch_size}: must be > 0")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction={self.validation_fraction}: must be in (0, 1)")
        if self.num_features < 2:
            raise ConfigError(f"num_features={self.num_features}: must be >= 2")
        if self.positive_class and self.classes and self.classes != (self.positive_class, "rest"):
            # A binary task relabels everything else as "rest".
            object.__setattr__(self, "classes", (self.positive_class, "rest"))

    # --- derived ---------------------------------------------------------------------
    @property
    def task_dir(self) -> Path:
        return Path(self.workspace) / self.task

    @property
    def tracking_uri(self) -> str:
        explicit = self.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
        return explicit or f"sqlite:///{Path(self.workspace).resolve() / 'mlflow.db'}"

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

    # --- construction ----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> "LoopConfig":
        """Defaults overridden by ``AL_*`` environment variables."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            key = ENV_PREFIX + f.name.upper()
            if key in environ:
                values[f.name] = environ[key]
        return cls().with_overrides(values)

    def with_overrides(self, overrides: typing.Mapping[str, object] | None) -> "LoopConfig":
        """A copy with ``overrides`` applied; strings are coerced to each field's type.

        Unknown keys are ignored so that a DAG's Params may carry extra entries
        (e.g. ``round``); ``None`` values mean "keep the current value".
        """
        if not overrides:
            return self
        hints = typing.get_type_hints(type(self))
        names = {f.name for f in dataclasses.fields(self)}
        changes = {}
        for key, value in overrides.items():
            if key not in names or value is None:
                continue
            try:
                changes[key] = _coerce(value, hints[key])
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{key}={value!r}: {exc}") from exc
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _coerce(value: object, kind: object) -> object:
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
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected a whole number")
        return int(float(value)) if isinstance(value, str) else int(value)
    if kind is float:
        return float(value)
    if kind is str:
        return str(value)
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        else:
            items = [str(v).strip() for v in value]  # type: ignore[union-attr]
        return tuple(v for v in items if v)
    raise TypeError(f"unsupported setting type {kind}")


def config_fields_doc() -> list[tuple[str, str, str]]:
    """(name, type, default) for every setting, for the README and ``--help``."""
    hints = typing.get_type_hints(LoopConfig)
    out = []
    for f in dataclasses.fields(LoopConfig):
        default = f.default if f.default is not dataclasses.MISSING else field()
        out.append((f.name, getattr(hints[f.name], "__name__", str(hints[f.name])), repr(default)))
    return out
