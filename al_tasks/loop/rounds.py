"""One active-learning round, as stages the CLI and the DAG's operators both call.

    featurize_corpus -> seed_task (first round) -> train_round (tune + evaluate + track +
    register) -> plan_query (stop rules) -> query_round (query + export + plot) ->
    ... labels come back (al_tasks.labelling.inbox.ingest_round) ... -> next round

Each stage takes a :class:`~al_tasks.config.LoopConfig` and plain values and returns a
small JSON-able dict (what Airflow passes between tasks as XCom). Round *n* trains on the
labels of rounds before *n* only, so re-running an old round sees what it saw the
first time.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from al_tasks.config import LoopConfig
from al_tasks.errors import NotSeededError
from al_tasks.labelling.export import export_query_set
from al_tasks.loop.policy import plan_round
from al_tasks.ml.evaluate import evaluate
from al_tasks.ml.features import FeatureSet, featurize, load_features
from al_tasks.ml.plot import plot_pool, sample_positions
from al_tasks.ml.query import pool_ids, query
from al_tasks.ml.tune import tune
from al_tasks.tracking import client, load_model_version, log_round, promote_if_better
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)


def feature_set_for(config: LoopConfig, features: str | Path | None = None, *, spark=None) -> FeatureSet:
    """The featurized corpus: the folder ``features`` when given and complete, else
    :func:`~al_tasks.ml.features.featurize` (cheap when corpus and settings are unchanged).
    """
    if features and Path(features, "_SUCCESS").exists():
        return FeatureSet.load(features)
    return featurize(config, spark)


def featurize_corpus(config: LoopConfig, *, spark=None) -> dict:
    """Featurize the corpus (reused when unchanged). Returns ``{"features", "fingerprint",
    "n_docs", "reused", "seconds"}``.
    """
    fs = featurize(config, spark)
    return {
        "features": str(fs.root),
        "fingerprint": fs.fingerprint,
        "n_docs": fs.n_docs,
        "reused": fs.reused,
        "seconds": round(fs.seconds, 1),
    }


def known_ids(config: LoopConfig, round_number: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids labelled before round ``round_number``, ids of the evaluation set), int64."""
    workspace = TaskWorkspace(config)
    labelled = workspace.store.training_labels(before_round=round_number)["id"].to_numpy()
    return labelled, workspace.evaluation_set.read()["id"].to_numpy()


def round_pool(config: LoopConfig, feature_set: FeatureSet, round_number: int) -> np.ndarray:
    """The ids round ``round_number`` may query: featurized, not labelled, not for evaluation."""
    labelled, evaluation = known_ids(config, round_number)
    return pool_ids(feature_set, np.concatenate([labelled, evaluation]))


def train_round(config: LoopConfig, round_number: int, *, features: str | Path | None = None) -> dict:
    """Tune on all labels before this round, evaluate on the fixed set, log and register.

    Returns ``{"round", "n_labelled", "n_eval", "accuracy", "macro_f1", "log_loss",
    "best_params", "tuning_c_at_bound", "tuning_log_c_range", "tuning_c_shifts",
    "model_version", "run_id", "tune_seconds", "features"}``; ``tuning_c_at_bound`` is
    ``"no"``, ``"low"`` or ``"high"`` (see :mod:`al_tasks.ml.tune`).
    """
    workspace = TaskWorkspace(config)
    fs = feature_set_for(config, features)
    labelled, evaluation = workspace.store.training_labels(before_round=round_number), workspace.evaluation_set.read()
    if len(labelled) == 0 or len(evaluation) == 0:
        raise NotSeededError(
            f"task {config.task!r} has no {'labels' if len(evaluation) else 'evaluation set'} "
            "yet: seed it first (al seed --labels FILE, or the DAG's seed task)"
        )
    classes = list(config.classes) or sorted(set(labelled["label"]) | set(evaluation["label"]))
    _, X = load_features(fs, labelled["id"].to_numpy())
    y = labelled["label"].to_numpy(dtype=object)
    log.info("round %s: tuning on %s labels (%s evaluations)", round_number, len(y), config.max_evals)
    result = tune(X, y, config, classes=classes)
    _, X_eval = load_features(fs, evaluation["id"].to_numpy())
    metrics = evaluate(result.model, X_eval, evaluation["label"].to_numpy(dtype=object), classes)
    log.info(
        "round %s: evaluation accuracy %.4f, macro-F1 %.4f on %s held-out labels",
        round_number,
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["n_eval"],
    )
    tracked = log_round(
        config,
        round_number,
        tune_result=result,
        metrics=metrics,
        extra_metrics={"n_labelled": len(y), "tune_seconds": result.seconds},
        params={"features": fs.fingerprint, "n_classes": len(classes)},
        input_example=X_eval[:5],
    )
    summary = {
        "round": round_number,
        "n_labelled": int(len(y)),
        "n_eval": int(metrics["n_eval"]),
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "log_loss": metrics["log_loss"],
        "best_params": result.best_params,
        "tuning_c_at_bound": result.c_at_bound,
        "tuning_log_c_range": list(result.log_c_range),
        "tuning_c_shifts": result.c_shifts,
        "model_version": tracked["model_version"],
        "run_id": tracked["run_id"],
        "tune_seconds": round(result.seconds, 2),
        "features": str(fs.root),
    }
    workspace.write_summary(round_number, summary)
    return summary


def plan_query(config: LoopConfig, round_number: int, accuracy: float, *, features: str | Path | None = None) -> dict:
    """Whether this round asks for labels (see :func:`al_tasks.loop.policy.plan_round`)."""
    pool_size = len(round_pool(config, feature_set_for(config, features), round_number))
    plan = plan_round(config, round_number, accuracy, pool_size)
    if plan["stop_reason"]:
        log.info("round %s is the last one, no query set is sent: %s", round_number, plan["stop_reason"])
    else:
        log.info("round %s: querying %s of a pool of %s", round_number, plan["batch"], pool_size)
    return plan


def query_round(
    config: LoopConfig,
    round_number: int,
    *,
    model_version: str,
    run_id: str | None = None,
    features: str | Path | None = None,
    spark=None,
) -> dict:
    """Query the pool with the round's model; write the query set, manifest and plot.

    Returns ``{"round", "query_csv", "query_xlsx", "manifest", "plot", "pool_size", "n_queried",
    "strategy", "query_seconds", "query_ids", "model_version"}``.
    """
    fs = feature_set_for(config, features, spark=spark)
    model = load_model_version(config, model_version)
    labelled_ids, eval_ids = known_ids(config, round_number)
    result = query(
        fs,
        model,
        config,
        exclude_ids=np.concatenate([labelled_ids, eval_ids]),
        labelled_ids=labelled_ids,
        round_number=round_number,
        spark=spark,
    )
    items = result.items.merge(fs.texts(result.items["id"].to_numpy()), on="id", how="left")
    out = TaskWorkspace(config).round_dir(round_number)
    export_query_set(
        items,
        out / "query.csv",
        out / "manifest.json",
        round_number=round_number,
        model_version=str(model_version),
        strategy=config.strategy,
        task=config.task,
        classes=config.classes,
    )
    items.to_parquet(out / "query.parquet", index=False)
    plot = plot_round(config, fs, model, round_number, items["id"].to_numpy(), out / "pool.png")
    if run_id:
        tracking = client(config)
        for path in (out / "query.csv", out / "query.xlsx", out / "manifest.json", plot):
            tracking.log_artifact(run_id, str(path), artifact_path="query")
        tracking.log_metric(run_id, "pool_size", result.pool_size, step=round_number)
        tracking.log_metric(run_id, "query_seconds", result.seconds, step=round_number)
    return {
        "round": round_number,
        "query_csv": str(out / "query.csv"),
        "query_xlsx": str(out / "query.xlsx"),
        "manifest": str(out / "manifest.json"),
        "plot": str(plot),
        "pool_size": result.pool_size,
        "n_queried": int(len(items)),
        "strategy": config.strategy,
        "query_seconds": round(result.seconds, 2),
        "query_ids": [int(i) for i in items["id"].to_numpy()],
        "model_version": str(model_version),
    }


def plot_round(
    config: LoopConfig, fs: FeatureSet, model, round_number: int, queried_ids: np.ndarray, path: Path
) -> Path:
    """The round's picture: a random pool sample by predicted class, the queried items circled."""
    pool = round_pool(config, fs, round_number)
    sample_ids = pool[sample_positions(len(pool), 2000, seed=config.seed + round_number)]
    _, X_sample = load_features(fs, sample_ids)
    _, X_queried = load_features(fs, queried_ids)
    title = (
        f"{config.task} round {round_number}: pool sample by predicted class, "
        f"{len(queried_ids)} queried ({config.strategy})"
    )
    return plot_pool(model, X_sample, X_queried, path, title=title)


def run_round(config: LoopConfig, round_number: int, *, spark=None) -> dict:
    """Featurize -> train -> promote -> query, in one process (the CLI's ``al round``).

    Returns the train and query results merged, plus ``promotion`` and ``seconds``.
    """
    started = time.perf_counter()
    fs = featurize(config, spark)
    trained = train_round(config, round_number, features=fs.root)
    promotion = promote_if_better(config, trained["model_version"], trained["accuracy"])
    queried = query_round(
        config,
        round_number,
        model_version=trained["model_version"],
        run_id=trained["run_id"],
        features=fs.root,
        spark=spark,
    )
    summary = {**trained, **queried, "promotion": promotion, "seconds": round(time.perf_counter() - started, 1)}
    TaskWorkspace(config).write_summary(round_number, summary)
    return summary


def round_status(
    round_number: int, *, trained: dict, promotion: dict, plan: dict, exported: dict, ingested: dict, decision: dict
) -> dict:
    """The round's outcome in one dict (the DAG's ``loop_status``), from its tasks' results.

    ``exported`` counts only when the plan asked for labels (a task skipped by the branch
    may still hold an older result).
    """
    exported = exported if plan.get("query") else {}
    if decision.get("continue"):
        status = "continuing"
        detail = (
            f"round {decision['next_round']} already exists as run {decision['next_run_id']}"
            if decision.get("already_exists")
            else f"round {decision['next_round']} triggered as run {decision['next_run_id']}"
        )
    else:
        status, detail = "stopped", decision.get("reason") or "unknown"
    result = {
        "round": round_number,
        "status": status,
        "detail": detail,
        "reason": decision.get("reason"),
        "n_labelled": trained.get("n_labelled"),
        "n_eval": trained.get("n_eval"),
        "accuracy": trained.get("accuracy"),
        "macro_f1": trained.get("macro_f1"),
        "model_version": trained.get("model_version"),
        "champion_version": promotion.get("champion_version"),
        "mlflow_run_id": trained.get("run_id"),
        "query_csv_uri": exported.get("query_csv_uri"),
        "labels_accepted": ingested.get("accepted"),
        "labels_rejected": ingested.get("rejected"),
        "rejects_uri": ingested.get("rejects_uri"),
        "next_run_id": decision.get("next_run_id"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    log.info(
        "round %s: %s labels, accuracy %s, model v%s (champion v%s); query set %s; labels back: %s; loop %s: %s",
        round_number,
        result["n_labelled"],
        _fmt(result["accuracy"]),
        result["model_version"],
        result["champion_version"],
        result["query_csv_uri"] or "none",
        f"{ingested['accepted']} accepted, {ingested['rejected']} rejected" if ingested else "n/a",
        status,
        detail,
    )
    return result


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
