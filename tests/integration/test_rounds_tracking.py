"""Whole rounds on the real data: MLflow runs, nested trials, artifacts, registry aliases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from al_tasks.loop.rounds import run_round
from al_tasks.loop.seeding import seed_task
from al_tasks.workspace import TaskWorkspace


@pytest.fixture
def seeded(task_config, feature_set, seed_labels, tmp_path):
    """A task of its own, seeded with the 230 random labels."""
    path = tmp_path / "seed.csv"
    seed_labels.to_csv(path, index=False)
    info = seed_task(task_config, path, feature_set.ids())
    return TaskWorkspace(task_config), info


def test_seed_splits_a_fixed_evaluation_set(seeded, task_config):
    workspace, info = seeded
    assert info["seeded"] and info["n_train"] + info["n_eval"] == 230
    assert abs(info["n_eval"] - 0.25 * 230) <= 9  # stratified, rounded per class
    assert not set(workspace.store.training_labels()["id"]) & set(workspace.evaluation_set.read()["id"])
    again = seed_task(task_config, "does-not-matter.csv", np.array([]))
    assert again["seeded"] is False  # idempotent: the evaluation set never moves


def test_a_round_is_tracked_in_mlflow(task_config, seeded, spark, corpus):
    from al_tasks.tracking import client

    core_config = task_config
    workspace, info = seeded
    summary = run_round(core_config, 1, spark=spark)
    mlflow_client = client(core_config)
    run = mlflow_client.get_run(summary["run_id"])
    metrics = run.data.metrics
    assert metrics["n_labelled"] == info["n_train"]
    assert metrics["pool_size"] == 8017 - 230
    assert 0.3 < metrics["accuracy"] <= 1 and 0 < metrics["macro_f1"] <= 1 and metrics["log_loss"] > 0
    assert run.data.params["strategy"] == "margin" and "best_C" in run.data.params
    children = mlflow_client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    # A best C at a bound of the range is searched again in a shifted range (half the trials).
    assert len(children) == core_config.max_evals + summary["tuning_c_shifts"] * (core_config.max_evals // 2)
    # The tuning bound check: a normal round's best C is inside the range searched.
    assert summary["tuning_c_at_bound"] == run.data.tags["al.tuning_c_at_bound"] == "no"
    assert metrics["tuning_c_at_bound"] == 0.0
    low, high = summary["tuning_log_c_range"]
    assert low + 1.1 < np.log(float(run.data.params["best_C"])) < high - 1.1
    assert {"log_loss", "accuracy", "macro_f1"} <= set(children[0].data.metrics)
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"evaluation.json", "query"} <= artifacts
    query_files = {a.path for a in mlflow_client.list_artifacts(run.info.run_id, "query")}
    assert {"query/query.csv", "query/pool.png", "query/manifest.json"} <= query_files
    version = mlflow_client.get_model_version_by_alias(core_config.model_name, "candidate")
    assert str(version.version) == summary["model_version"] and version.run_id == run.info.run_id
    champion = mlflow_client.get_model_version_by_alias(core_config.model_name, "champion")
    assert str(champion.version) == summary["model_version"]  # the first model always wins
    assert summary["n_queried"] == 100

    # The exported query set: 100 ranked pool items with their narratives.
    query = pd.read_csv(summary["query_csv"], encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert query["rank"].astype(int).tolist() == list(range(1, 101))
    assert (query["label"] == "").all()
    texts = corpus.docs.set_index("id")["text"]
    first = int(query["id"].iloc[0])
    assert query["text"].iloc[0].lstrip("'") == texts.loc[first]

    # Round 2 learns from round 1's answers and sees more labels.
    truth = corpus.docs.set_index("id")["label"]
    answers = pd.DataFrame({"id": query["id"], "label": truth.loc[query["id"].astype(int)].to_numpy()})
    workspace.store.append(answers, round_number=1, source="test", source_sha256="round-1-test")
    second = run_round(core_config, 2, spark=spark)
    assert second["n_labelled"] == info["n_train"] + 100
    assert second["pool_size"] == 8017 - 230 - 100
    assert len(second["query_ids"]) == 100
    assert not set(second["query_ids"]) & set(answers["id"].astype(int)), "round 2 asked again for round 1's items"
    promotion = second["promotion"]
    assert promotion["promoted"] == (second["accuracy"] > summary["accuracy"])

    # Re-running round 1 later sees exactly round 1's labels again.
    from al_tasks.loop.rounds import train_round

    rerun = train_round(core_config, 1)
    assert rerun["n_labelled"] == summary["n_labelled"]


def test_a_c_at_the_bound_of_its_range_is_reported(task_config, seeded):
    """A range far below any useful C (e^-10 .. e^-5): the best C sits at its top."""
    from al_tasks.loop.rounds import train_round
    from al_tasks.tracking import client

    workspace, _ = seeded
    narrow = task_config.with_overrides({"log_c_low": -10.0, "log_c_high": -5.0, "c_bound_shifts": 0, "max_evals": 24})
    summary = train_round(narrow, 1)
    assert summary["tuning_c_at_bound"] == "high" and summary["tuning_c_shifts"] == 0
    assert summary["tuning_log_c_range"] == [-10.0, -5.0]
    run = client(narrow).get_run(summary["run_id"])
    assert run.data.metrics["tuning_c_at_bound"] == 1.0
    assert run.data.tags["al.tuning_c_at_bound"] == "high"
    assert run.data.params["tuning_log_c_high"] == "-5.0"
    assert workspace.read_summary(1)["tuning_c_at_bound"] == "high"
