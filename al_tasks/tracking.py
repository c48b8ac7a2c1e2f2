"""MLflow tracking: one run per round, a nested run per hyperopt trial, a registered model.

Round run
    params   best hyperparameters, strategy, batch size, featurize settings
    metrics  accuracy, macro_f1, log_loss (fixed evaluation set), n_labelled, pool_size,
             tune/query seconds
    artifacts query set CSV, pool plot PNG, evaluation report JSON
    model    logged with a signature, registered as a new version of ``al-<task>``,
             alias ``candidate``
Nested runs  one per trial: C, penalty, class_weight, log_loss, accuracy, macro_f1

The default tracking URI is a SQLite file in the workspace; ``MLFLOW_TRACKING_URI``
(or ``LoopConfig.mlflow_tracking_uri``) points at a tracking server instead.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from al_tasks.config import LoopConfig

# MLflow's own chatter (alembic migrations, registry notices) is not our progress log.
for _name in ("alembic", "mlflow"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Models are pickled (cloudpickle) because skops cannot load our own estimator class
# without trusting it; MLflow's generic warning about that is noise in every round.
logging.getLogger("mlflow.sklearn").setLevel(logging.ERROR)


def client(config: LoopConfig):
    """An ``MlflowClient`` on ``config.tracking_uri`` (also set as the global URI)."""
    import mlflow
    from mlflow import MlflowClient

    Path(config.workspace).mkdir(parents=True, exist_ok=True)
    # mlflow.set_*_uri also write MLFLOW_*_URI into os.environ, which LoopConfig reads as
    # the user's choice: keep the environment as the user left it.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(config.tracking_uri)
    mlflow.set_registry_uri(config.tracking_uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.tracking_uri)


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
    artifacts = Path(config.workspace).resolve() / "mlartifacts"
    location = artifacts.as_uri() if config.tracking_uri.startswith("sqlite") else None
    return mlflow_client.create_experiment(name, artifact_location=location)


def log_round(
    config: LoopConfig,
    round_number: int,
    *,
    tune_result,
    metrics: dict,
    extra_metrics: dict | None = None,
    params: dict | None = None,
    artifacts: dict[str, str | Path] | None = None,
    input_example=None,
    tags: dict | None = None,
) -> dict:
    """Log one round; returns ``{"run_id", "model_version", "model_uri"}``.

    ``input_example``: a small CSR matrix of real features, used for the signature.
    """
    import mlflow
    import mlflow.sklearn
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.models import infer_signature

    mlflow_client = client(config)
    exp_id = experiment_id(config)
    now = int(time.time() * 1000)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"round-{round_number}",
                          tags={"al.task": config.task, "al.round": str(round_number), **(tags or {})}) as run:
        # Trials as nested runs, written in batches: 128 trials in a few seconds.
        for trial in tune_result.trials:
            child = mlflow_client.create_run(
                exp_id, run_name=f"trial-{trial['number']:03d}",
                tags={"mlflow.parentRunId": run.info.run_id, "al.round": str(round_number)},
            )
            mlflow_client.log_batch(
                child.info.run_id,
                metrics=[Metric(k, float(trial[k]), now, 0) for k in ("log_loss", "accuracy", "macro_f1", "seconds")],
                params=[Param(k, str(trial[k])) for k in ("C", "penalty", "class_weight")],
                tags=[RunTag("al.trial", str(trial["number"]))],
            )
            mlflow_client.set_terminated(child.info.run_id)
        all_params = {
            **{f"best_{k}": v for k, v in tune_result.best_params.items()},
            "strategy": config.strategy,
            "batch_size": config.batch_size,
            "max_evals": config.max_evals,
            "num_features": config.num_features,
            "seed": config.seed,
            **(params or {}),
        }
        mlflow.log_params({k: str(v) for k, v in all_params.items()})
        scalar_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        scalar_metrics.update({k: float(v) for k, v in (extra_metrics or {}).items()})
        scalar_metrics["best_validation_log_loss"] = float(tune_result.best_loss)
        mlflow.log_metrics(scalar_metrics, step=round_number)
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "evaluation.json"
            report.write_text(json.dumps(metrics, indent=2, default=str))
            mlflow.log_artifact(str(report))
        for name, path in (artifacts or {}).items():
            if path and Path(path).exists():
                mlflow.log_artifact(str(path), artifact_path=name)
        signature = None
        if input_example is not None:
            signature = infer_signature(input_example, tune_result.model.predict_proba(input_example))
        logged = mlflow.sklearn.log_model(
            tune_result.model, name="model", signature=signature,
            registered_model_name=config.model_name, serialization_format="cloudpickle",
        )
        run_id = run.info.run_id
    version = _registered_version(mlflow_client, config.model_name, run_id)
    mlflow_client.set_registered_model_alias(config.model_name, "candidate", version)
    mlflow_client.set_model_version_tag(config.model_name, version, "al.round", str(round_number))
    mlflow_client.set_model_version_tag(config.model_name, version, "al.accuracy", f"{metrics['accuracy']:.6f}")
    return {"run_id": run_id, "model_version": str(version), "model_uri": logged.model_uri}


def _registered_version(mlflow_client, name: str, run_id: str) -> str:
    versions = mlflow_client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        raise RuntimeError(f"model of run {run_id} was not registered under {name!r}")
    return max(versions, key=lambda v: int(v.version)).version


def promote_if_better(config: LoopConfig, version: str, accuracy: float) -> dict:
    """Give ``version`` the alias ``champion`` when it beats the current champion.

    Compared on the fixed evaluation set's accuracy (tag ``al.accuracy``); the first
    model always wins. Every move is recorded as a model-version tag
    ``al.champion_since`` and in the registered model's description, so the alias
    history stays visible in MLflow.
    """
    mlflow_client = client(config)
    name = config.model_name
    try:
        current = mlflow_client.get_model_version_by_alias(name, "champion")
    except Exception:  # no champion yet (MlflowException: alias not found)
        current = None
    current_accuracy = float(current.tags.get("al.accuracy", "nan")) if current else float("-inf")
    promoted = current is None or (str(current.version) != str(version) and accuracy > current_accuracy)
    if promoted:
        mlflow_client.set_registered_model_alias(name, "champion", version)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        mlflow_client.set_model_version_tag(name, version, "al.champion_since", stamp)
        model = mlflow_client.get_registered_model(name)
        line = f"{stamp}: champion -> v{version} (accuracy {accuracy:.4f}, was " + (
            f"v{current.version} {current_accuracy:.4f})" if current else "none)")
        mlflow_client.update_registered_model(name, description=((model.description or "") + "\n" + line).strip())
    return {
        "promoted": promoted,
        "champion_version": str(version if promoted else current.version),
        "previous_champion": str(current.version) if current else None,
        "previous_accuracy": None if current is None else current_accuracy,
    }


def load_model(config: LoopConfig, alias: str = "champion"):
    """The registered model under ``alias`` (None when there is none), and its version."""
    import mlflow.sklearn

    mlflow_client = client(config)
    try:
        version = mlflow_client.get_model_version_by_alias(config.model_name, alias)
    except Exception:
        return None, None
    return mlflow.sklearn.load_model(f"models:/{config.model_name}@{alias}"), str(version.version)


def disable_mlflow_telemetry() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
