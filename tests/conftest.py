"""Shared fixtures: one Spark session and one featurized copy of the shipped data.

Every test runs on the real CFPB sample shipped in data/, real Spark (local[2]) and a
real MLflow SQLite store in a temporary workspace.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AL_SPARK_LOG_LEVEL", "ERROR")

from al_tasks.config import LoopConfig  # noqa: E402


@pytest.fixture(scope="session")
def core_config(tmp_path_factory) -> LoopConfig:
    workspace = tmp_path_factory.mktemp("workspace")
    return LoopConfig(workspace=str(workspace), spark_master="local[2]", max_evals=6, spark_driver_memory="2g")


@pytest.fixture(scope="session")
def spark(core_config):
    from al_tasks.spark import spark_session

    session = spark_session(core_config)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def corpus(core_config):
    from al_tasks.corpus import read_corpus

    return read_corpus(core_config.corpus_path, core_config)


@pytest.fixture(scope="session")
def feature_set(core_config, spark):
    from al_tasks.featurize import featurize

    return featurize(core_config, spark)


@pytest.fixture(scope="session")
def seed_labels(corpus):
    """230 random labelled complaints (id int64, label str), as the demo starts."""
    rng = np.random.default_rng(7)
    rows = rng.choice(len(corpus.docs), size=230, replace=False)
    return corpus.docs.iloc[rows][["id", "label"]].reset_index(drop=True)


@pytest.fixture(scope="session")
def seed_model(core_config, feature_set, seed_labels):
    """A model tuned on the 230 seed labels (few evaluations, for speed)."""
    from al_tasks.featurize import load_features
    from al_tasks.tune import tune

    _, X = load_features(feature_set, seed_labels["id"].to_numpy())
    return tune(X, seed_labels["label"].to_numpy(dtype=object), core_config, log=lambda *_: None).model
