"""One place that builds the SparkSession, so local and cluster runs share settings."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator

from al_tasks.config import LoopConfig


def quiet_pyspark_pandas_warning() -> None:
    """PySpark 4 warns on every pandas conversion that pandas 3 is newer than it knows;
    it works, and the warning would drown the logs.
    """
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def spark_session(config: LoopConfig | None = None, app_name: str = "active-learning"):
    """Get or create a SparkSession for ``config.spark_master``.

    ``local[*]`` by default; ``spark://host:7077`` runs the same code on a standalone
    cluster. The driver binds to ``config.spark_driver_host``; executors run this
    interpreter (``PYSPARK_PYTHON``, unless the environment already names one), so they
    have the same packages as the driver.
    """
    from pyspark.sql import SparkSession

    config = config or LoopConfig()
    quiet_pyspark_pandas_warning()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(config.spark_master)
        .appName(app_name)
        .config("spark.driver.host", config.spark_driver_host)
        .config("spark.driver.bindAddress", config.spark_driver_host)
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.ui.enabled", str(config.spark_ui).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(config.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "5000")
        .config("spark.sql.session.timeZone", "UTC")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.spark_log_level)
    return spark


@contextlib.contextmanager
def stop_spark_if_started() -> Iterator[None]:
    """Stop, on exit, a SparkSession the block started (one already running stays)."""
    from pyspark.sql import SparkSession

    before = SparkSession.getActiveSession()
    try:
        yield
    finally:
        after = SparkSession.getActiveSession()
        if before is None and after is not None:
            after.stop()
