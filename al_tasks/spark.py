"""One place that builds the SparkSession, so local and cluster runs share settings."""

from __future__ import annotations

import os
import sys

from al_tasks.config import LoopConfig


def spark_session(config: LoopConfig | None = None, app_name: str = "active-learning"):
    """Get or create a SparkSession for ``config.spark_master``.

    ``local[*]`` by default; ``spark://host:7077`` runs the same code on a standalone
    cluster. The driver binds to 127.0.0.1 unless ``SPARK_DRIVER_HOST`` says otherwise,
    and the UI is off unless ``AL_SPARK_UI=1``.
    """
    from pyspark.sql import SparkSession

    config = config or LoopConfig()
    # Executors must run the same interpreter (and packages) as the driver.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    driver_host = os.environ.get("SPARK_DRIVER_HOST", "127.0.0.1")
    builder = (
        SparkSession.builder.master(config.spark_master)
        .appName(app_name)
        .config("spark.driver.host", driver_host)
        .config("spark.driver.bindAddress", driver_host)
        .config("spark.driver.memory", config.spark_driver_memory)
        .config("spark.ui.enabled", os.environ.get("AL_SPARK_UI", "0") == "1")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(config.spark_shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "5000")
        .config("spark.sql.session.timeZone", "UTC")
    )
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("AL_SPARK_LOG_LEVEL", "ERROR"))
    return spark
