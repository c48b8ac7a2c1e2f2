"""One active-learning round, as stages the CLI and the DAG's operators both call.

    featurize -> train_round (tune + evaluate + track + register) -> query_round (query +
    export + plot)

Each stage takes a ``LoopConfig`` and a round number and returns a small JSON-able dict
(what Airflow passes between tasks through XCom).
"""

from __future__ import annotations

import time

import numpy as np

from al_tasks.config import LoopConfig
from al_tasks.evaluate import evaluate
from al_tasks.featurize import FeatureSet, featurize, load_features
from al_tasks.workspace import TaskWorkspace


def feature_set_for(config: LoopConfig, *, spark=None, log=print) -> FeatureSet:
    """The featurized corpus, fitting it first if needed (cheap when unchanged)."""
    return featurize(config, spark, log=log)


def train_round(config: LoopConfig, round_number: int, *, feature_set: FeatureSet | None = None, log=print) -> dict:
    """Tune on all labels so far, evaluate on the fixed set, log and register the model.

    Returns ``{"round", "n_labelled", "n_eval", "accuracy", "macro_f1", "log_loss",
    "best_params", "model_version", "run_id", "tune_seconds"}``.
    """
    from al_tasks.tracking import log_round
    from al_tasks.tune import tune

    workspace = TaskWorkspace(config)
    fs = feature_set or feature_set_for(config, log=log)
    labelled, evaluation = workspace.labelled(before_round=round_number), workspace.evaluation()
    if len(labelled) == 0:
        raise ValueError(f"task {config.task!r} has no labels yet: seed it first (al seed ...)")
    if len(evaluation) == 0:
        raise ValueError(f"task {config.task!r} has no evaluation set: seed it first (al seed ...)")
    classes = list(config.classes) or sorted(set(labelled["label"]) | set(evaluation["label"]))
    _, X = load_features(fs, labelled["id"].to_numpy())
    y = labelled["label"].to_numpy(dtype=object)
    log(f"round {round_number}: tuning on {len(y)} labels ({config.max_evals} evaluations)")
    result = tune(X, y, config, classes=classes, log=log)
    _, X_eval = load_features(fs, evaluation["id"].to_numpy())
    metrics = evaluate(result.model, X_eval, evaluation["label"].to_numpy(dtype=object), classes)
    log(f"round {round_number}: evaluation accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
        f"on {metrics['n_eval']} held-out labels")
    tracked = log_round(
        config, round_number, tune_result=result, metrics=metrics,
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
        "model_version": tracked["model_version"],
        "run_id": tracked["run_id"],
        "tune_seconds": round(result.seconds, 2),
        "features": str(fs.root),
    }
    workspace.write_summary(round_number, summary)
    return summary


def query_round(
    config: LoopConfig,
    round_number: int,
    *,
    model_version: str,
    run_id: str | None = None,
    feature_set: FeatureSet | None = None,
    spark=None,
    log=print,
) -> dict:
    """Query the pool with the round's model; write the query set, manifest and plot.

    Returns ``{"round", "query_csv", "manifest", "plot", "pool_size", "n_queried",
    "strategy", "query_seconds", "query_ids"}``.
    """
    import mlflow.sklearn

    from al_tasks.labelling import export_query_set
    from al_tasks.plot import plot_pool, sample_positions
    from al_tasks.query import query
    from al_tasks.tracking import client

    workspace = TaskWorkspace(config)
    fs = feature_set or feature_set_for(config, spark=spark, log=log)
    mlflow_client = client(config)
    model = mlflow.sklearn.load_model(f"models:/{config.model_name}/{model_version}")
    labelled_ids = workspace.labelled(before_round=round_number)["id"].to_numpy()
    eval_ids = workspace.evaluation()["id"].to_numpy()
    result = query(
        fs, model, config, exclude_ids=np.concatenate([labelled_ids, eval_ids]), labelled_ids=labelled_ids,
        round_number=round_number, spark=spark, log=log,
    )
    items = result.items.merge(fs.texts(result.items["id"].to_numpy()), on="id", how="left")
    out = workspace.round_dir(round_number)
    manifest = export_query_set(
        items, out / "query.csv", out / "manifest.json", round_number=round_number,
        model_version=str(model_version), strategy=config.strategy, task=config.task,
    )
    items.to_parquet(out / "query.parquet", index=False)
    # Plot: a random pool sample plus the queried items.
    all_ids = fs.ids()
    pool_ids = np.setdiff1d(all_ids, np.concatenate([labelled_ids, eval_ids]))
    sample_ids = pool_ids[sample_positions(len(pool_ids), 2000, seed=config.seed + round_number)]
    _, X_sample = load_features(fs, sample_ids)
    _, X_queried = load_features(fs, items["id"].to_numpy())
    plot = plot_pool(model, X_sample, X_queried, out / "pool.png",
                     title=f"{config.task} round {round_number}: pool sample by predicted class, {len(items)} queried ({config.strategy})")
    if run_id:
        for path in (out / "query.csv", out / "manifest.json", plot):
            mlflow_client.log_artifact(run_id, str(path), artifact_path="query")
        mlflow_client.log_metric(run_id, "pool_size", result.pool_size, step=round_number)
        mlflow_client.log_metric(run_id, "query_seconds", result.seconds, step=round_number)
    return {
        "round": round_number,
        "query_csv": str(out / "query.csv"),
        "manifest": str(out / "manifest.json"),
        "plot": str(plot),
        "pool_size": result.pool_size,
        "n_queried": int(len(items)),
        "strategy": config.strategy,
        "query_seconds": round(result.seconds, 2),
        "query_ids": [int(i) for i in items["id"].to_numpy()],
        "model_version": str(model_version),
    }


def run_round(config: LoopConfig, round_number: int, *, spark=None, log=print) -> dict:
    """featurize -> train -> promote -> query, in one process (the CLI's ``round``)."""
    from al_tasks.tracking import promote_if_better

    started = time.perf_counter()
    fs = feature_set_for(config, spark=spark, log=log)
    trained = train_round(config, round_number, feature_set=fs, log=log)
    promotion = promote_if_better(config, trained["model_version"], trained["accuracy"])
    queried = query_round(config, round_number, model_version=trained["model_version"], run_id=trained["run_id"],
                          feature_set=fs, spark=spark, log=log)
    summary = {**trained, **{k: v for k, v in queried.items() if k != "query_ids"}, "promotion": promotion,
               "seconds": round(time.perf_counter() - started, 1)}
    TaskWorkspace(config).write_summary(round_number, summary)
    return summary
