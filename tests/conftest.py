"""Test tiers and shared fixtures.

* ``tests/unit`` -- no service: pure functions, files in a temporary folder
  (``pytest tests/unit``, well under a minute);
* ``tests/integration`` -- real Spark, a real SeaweedFS S3 server, real MLflow;
* ``tests/airflow`` -- Airflow itself: ``dag.test()`` in process, and the real
  scheduler, triggerer and API server.

Fixtures live in ``tests/fixtures`` and are registered here once.
"""

from __future__ import annotations

import os

os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("AL_SPARK_LOG_LEVEL", "ERROR")

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.spark",
    "tests.fixtures.s3",
    "tests.fixtures.airflow",
    "tests.fixtures.scoring",
    "tests.fixtures.label_db",
]
