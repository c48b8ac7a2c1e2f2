"""MLflow tracking: one run per round, a nested run per hyperopt trial, a registered model.

Round run
    params   best hyperparameters, strategy, batch size, featurize settings, the log(C)
             range searched (``tuning_log_c_low`` / ``_high``)
    metrics  accuracy, macro_f1, log_loss (fixed evaluation set), n_labelled, pool_size,
             tune/query seconds; the tuning bound check ``tuning_c_at_bound`` (1 = the
             best C sits at a bound of the range searched, 0 = inside) and
             ``tuning_c_shifts`` (re-searches in a shifted range)
    tags     ``al.tuning_c_at_bound``: ``no``, ``low`` or ``high``
    artifacts query set CSV, pool plot PNG, evaluation report JSON
    model    logged with a signature, registered as a new version of ``al-<task>``,
             alias ``candidate``
Nested runs  one per trial: C, penalty, class_weight, log_loss, accuracy, macro_f1

Aliases: ``candidate`` (every round's new version) and ``champion`` (the best so far on
the fixed evaluation set; the one the daily DAG and the stream scorer use).

The default tracking URI is a SQLite file in the workspace; ``MLFLOW_TRACKING_URI``
(or ``LoopConfig.mlflow_tracking_uri``) points at a tracking server instead.
"""

from __future__ import annotations

import json
import logging
import os
import time

from al_tasks.config import LoopConfig
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)

#: The alias every round's newly registered version gets.
CANDIDATE = "candidate"
#: The alias of the best version so far on the fixed evaluation set.
CHAMPION = "champion"
#: MLflow error codes that mean "no such registered model / alias" (not an outage).
_NOT_FOUND_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}

# MLflow's own chatter (alembic migrations, registry notices) is not our progress log.
for _name in ("alembic", "mlflow"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Models are pickled (cloudpickle) because skops cannot load our own estimator class
# without trusting it; MLflow's generic warning about that is noise in every round.
logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)


def tracking_uri(config: LoopConfig) -> str:
    """``config.mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the workspace."""
    explicit = config.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    return explicit or f"sqlite:///{TaskWorkspace(config).mlflow_db}"


def client(config: LoopConfig):
    """An ``MlflowClient`` on :func:`tracking_uri` (also set as the global URI)."""
    import mlflow
    from mlflow import MlflowClient

    TaskWorkspace(config).base.mkdir(parents=True, exist_ok=True)
    # mlflow.set_*_uri also write MLFLOW_*_URI into os.environ, which LoopConfig reads as
    # the user's choice: keep the environment as the user left it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(config: LoopConfig, name: str | None = None) -> str:
    """Id of experiment ``name`` (default ``config.experiment_name``), created if needed.

    With the SQLite default, artifacts go to ``<workspace>/mlartifacts`` rather than
    wherever the process happens to run.
    """
    name = name or config.experiment_name
    mlflow_client = client(config)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = TaskWorkspace(config).mlflow_artifacts
    location = artifacts.as_uri() if tracking_uri(config).startswith("sqlite") else None
    return mlflow_client.create_experiment(name, artifact_location=location)


def log_trials(mlflow_client, experiment: str, parent_run_id: str, round_number: int, trials: list[dict]) -> None:
    """Every hyperopt trial as a nested run of the round's run, written in batches
    (128 trials in a few seconds).
    """
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    for trial in trials:
        child = mlflow_client.create_run(
            experiment,
            run_name=f"trial-{trial['number']:03d}",
            tags={"mlflow.parentRunId": parent_run_id, "al.round": str(round_number)},
        )
        mlflow_client.log_batch(
            child.info.run_id,
            metrics=[Metric(k, float(trial[k]), now, 0) for k in ("log_loss", "accuracy", "macro_f1", "seconds")],
            params=[Param(k, str(trial[k])) for k in ("C", "penalty", "class_weight")],
            tags=[RunTag("al.trial", str(trial["number"]))],
        )
        mlflow_client.set_terminated(child.info.run_id)


def round_params(config: LoopConfig, tune_result, params: dict | None) -> dict[str, str]:
    """The round run's params: the best hyperparameters and the settings that shaped the round."""
    values = {
        **{f"best_{k}": v for k, v in tune_result.best_params.items()},
        "strategy": config.strategy,
        "batch_size": config.batch_size,
        "tuning_log_c_low": round(tune_result.log_c_range[0], 4),
        "tuning_log_c_high": round(tune_result.log_c_range[1], 4),
        "max_evals": config.max_evals,
        "num_features": config.num_features,
        "featurizer": config.featurizer,
        "sublinear_tf": config.sublinear_tf,
        "ngram_max": config.ngram_max,
        "lsa_components": config.lsa_components,
        "seed": config.seed,
        **(params or {}),
    }
    return {k: str(v) for k, v in values.items()}


def tuning_check_metrics(tune_result) -> dict[str, float]:
    """The round's tuning bound check as MLflow metrics (see the module docstring)."""
    return {
        "tuning_c_at_bound": float(tune_result.c_at_bound != "no"),
        "tuning_c_shifts": float(tune_result.c_shifts),
    }


def log_round(
    config: LoopConfig,
    round_number: int,
    *,
    tune_result,
    metrics: dict,
    extra_metrics: dict | None = None,
    params: dict | None = None,
    input_example=None,
) -> dict:
    """Log one round (see the module docstring); returns ``{"run_id", "model_version", "model_uri"}``.

    ``input_example``: a small CSR matrix of real features, used for the signature.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature

    mlflow_client = client(config)
    exp_id = experiment_id(config)
    tags = {"al.task": config.task, "al.round": str(round_number), "al.tuning_c_at_bound": tune_result.c_at_bound}
    with mlflow.start_run(experiment_id=exp_id, run_name=f"round-{round_number}", tags=tags) as run:
        log_trials(mlflow_client, exp_id, run.info.run_id, round_number, tune_result.trials)
        mlflow.log_params(round_params(config, tune_result, params))
        scalar_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        scalar_metrics.update({k: float(v) for k, v in (extra_metrics or {}).items()})
        scalar_metrics["best_validation_log_loss"] = float(tune_result.best_loss)
        scalar_metrics.update(tuning_check_metrics(tune_result))
        mlflow.log_metrics(scalar_metrics, step=round_number)
        mlflow.log_dict(json.loads(json.dumps(metrics, default=str)), "evaluation.json")
        signature = None
        if input_example is not None:
            signature = infer_signature(input_example, tune_result.model.predict_proba(input_example))
        logged = mlflow.sklearn.log_model(
            tune_result.model,
            name="model",
            signature=signature,
            registered_model_name=config.model_name,
            serialization_format="cloudpickle",
        )
        run_id = run.info.run_id
    version = _registered_version(mlflow_client, config.model_name, run_id)
    mlflow_client.set_registered_model_alias(config.model_name, CANDIDATE, version)
    mlflow_client.set_model_version_tag(config.model_name, version, "al.round", str(round_number))
    mlflow_client.set_model_version_tag(config.model_name, version, "al.accuracy", repr(float(metrics["accuracy"])))
    return {"run_id": run_id, "model_version": str(version), "model_uri": logged.model_uri}


def _registered_version(mlflow_client, name: str, run_id: str) -> str:
    versions = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        raise RuntimeError(f"model of run {run_id} was not registered under {name!r}")
    return max(versions, key=lambda v: int(v.version)).version


def promote_if_better(config: LoopConfig, version: str, accuracy: float) -> dict:
    """Give ``version`` the alias :data:`CHAMPION` when it beats the current champion.

    Compared on the fixed evaluation set's accuracy (tag ``al.accuracy``); the first
    model always wins. Every move is recorded as a model-version tag
    ``al.champion_since`` and in the registered model's description, so the alias
    history stays visible in MLflow.
    """
    mlflow_client = client(config)
    name = config.model_name
    current = version_under_alias(config, CHAMPION)
    current_accuracy = float(current.tags.get("al.accuracy", "nan")) if current else float("-inf")
    # The tag holds the full float (repr), so a tie is a tie and does not promote; tags
    # written with 6 decimals by older versions are compared at that precision.
    promoted = current is None or (
        str(current.version) != str(version) and round(accuracy, 6) > round(current_accuracy, 6)
    )
    if promoted:
        mlflow_client.set_registered_model_alias(name, CHAMPION, version)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        mlflow_client.set_model_version_tag(name, version, "al.champion_since", stamp)
        model = mlflow_client.get_registered_model(name)
        line = f"{stamp}: champion -> v{version} (accuracy {accuracy:.4f}, was " + (
            f"v{current.version} {current_accuracy:.4f})" if current else "none)"
        )
        mlflow_client.update_registered_model(name, description=((model.description or "") + "\n" + line).strip())
    return {
        "promoted": promoted,
        "champion_version": str(version if promoted else current.version),
        "previous_champion": str(current.version) if current else None,
        "previous_accuracy": None if current is None else current_accuracy,
    }


def version_under_alias(config: LoopConfig, alias: str):
    """The ``ModelVersion`` under ``alias`` of ``config.model_name``, or None if there is none.

    Any other registry error (a tracking server that is down) is raised: that must fail
    the caller, not look like "no model".
    """
    from mlflow.exceptions import MlflowException

    try:
        return client(config).get_model_version_by_alias(config.model_name, alias)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND_CODES:
            return None
        raise


def load_model_version(config: LoopConfig, version: str | int):
    """The registered model ``config.model_name`` at ``version`` (by number, not alias)."""
    import mlflow.sklearn

    client(config)
    return mlflow.sklearn.load_model(f"models:/{config.model_name}/{version}")


class ModelCache:
    """The model under a registry alias, looked up again on every :meth:`get`.

    A lookup is one registry query; the model itself is loaded by version (so a
    promotion between lookup and load cannot mix versions) and only when the alias
    moved. A backfill over many days or a stream of micro-batches thus follows
    promotions without reloading the model for every day or batch.

    Parameters
    ----------
    config : LoopConfig (model_name, tracking URI)
    alias : registry alias, :data:`CHAMPION` by default
    """

    def __init__(self, config: LoopConfig, alias: str = CHAMPION):
        self.config = config
        self.alias = alias
        self.model = None
        self.version: str | None = None

    def lookup(self) -> str | None:
        """The version the alias points to now, or None if there is none."""
        found = version_under_alias(self.config, self.alias)
        return None if found is None else str(found.version)

    def get(self):
        """(model, version str), or (None, None) when no model is under the alias."""
        version = self.lookup()
        if version is None:
            return None, None
        if version != self.version:
            self.model = load_model_version(self.config, version)
            self.version = version
        return self.model, self.version


def disable_mlflow_telemetry() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
