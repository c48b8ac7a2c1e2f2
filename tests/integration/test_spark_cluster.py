"""Featurize and query on a real Spark standalone cluster (master + worker on 127.0.0.1).

The same code as local[*]; only LoopConfig.spark_master changes. Runs in a subprocess so
the test session's local SparkSession is not in the way.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module")
def standalone_cluster(tmp_path_factory):
    import pyspark

    spark_home = os.path.dirname(pyspark.__file__)
    logs = tmp_path_factory.mktemp("spark-cluster")
    env = {
        **os.environ,
        "SPARK_HOME": spark_home,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(logs),
        "SPARK_WORKER_DIR": str(logs / "work"),
    }
    port, ui, worker_ui = free_port(), free_port(), free_port()
    spark_class = os.path.join(spark_home, "bin", "spark-class")
    master = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        env=env,
        stdout=open(logs / "master.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = subprocess.Popen(
        [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            f"spark://127.0.0.1:{port}",
            "--host",
            "127.0.0.1",
            "--webui-port",
            str(worker_ui),
            "--cores",
            "2",
            "--memory",
            "2g",
        ],
        env=env,
        stdout=open(logs / "worker.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 90
        while wait_for(f"http://127.0.0.1:{ui}/json/").get("aliveworkers", 0) < 1:
            assert time.time() < deadline, (logs / "worker.log").read_text()[-2000:]
            time.sleep(1)
        yield {"url": f"spark://127.0.0.1:{port}", "ui": f"http://127.0.0.1:{ui}", "logs": logs}
    finally:
        for proc in (worker, master):
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)


CLUSTER_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pandas as pd
    from al_tasks.config import LoopConfig
    from al_tasks.io.corpus import read_corpus
    from al_tasks.ml.features import featurize, load_features
    from al_tasks.ml.query import query
    from al_tasks.spark import spark_session
    from al_tasks.ml.tune import tune
    from devstack.modal_reference import query_in_memory

    master, workspace, corpus_path = sys.argv[1:4]
    cfg = LoopConfig(workspace=workspace, corpus_path=corpus_path, spark_master=master, max_evals=3,
                     spark_driver_memory="1g", strategy="entropy", batch_size=50)
    spark = spark_session(cfg)
    fs = featurize(cfg, spark)
    docs = read_corpus(corpus_path, cfg).docs
    labelled = docs.iloc[:150]
    _, X = load_features(fs, labelled["id"].to_numpy())
    model = tune(X, labelled["label"].to_numpy(dtype=object), cfg).model
    result = query(fs, model, cfg, exclude_ids=labelled["id"].to_numpy(), spark=spark)
    ids, X_all = load_features(fs)
    pool = ~np.isin(ids, labelled["id"].to_numpy())
    expected = query_in_memory(model, X_all[np.flatnonzero(pool)], ids[pool], "entropy", 50)
    print(json.dumps({"master": spark.sparkContext.master, "app_id": spark.sparkContext.applicationId,
                      "n_docs": fs.n_docs, "query_ids": sorted(result.items["id"].tolist()),
                      "expected": sorted(expected.tolist())}))
    spark.stop()
""")


def test_featurize_and_query_run_on_a_standalone_cluster(standalone_cluster, tmp_path):
    import pandas as pd

    corpus = tmp_path / "corpus.csv"
    pd.read_csv(REPO / "data" / "cfpb_complaints.csv.gz", nrows=1500).to_csv(corpus, index=False)
    script = tmp_path / "cluster_round.py"
    script.write_text(CLUSTER_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), standalone_cluster["url"], str(tmp_path / "ws"), str(corpus)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["master"] == standalone_cluster["url"]
    assert result["n_docs"] == 1500
    assert result["query_ids"] == result["expected"] and len(result["query_ids"]) == 50
    # The master saw our application finish: the work ran on the cluster's executor.
    state = wait_for(standalone_cluster["ui"] + "/json/")
    apps = {a["id"]: a for a in state.get("completedapps", []) + state.get("activeapps", [])}
    assert result["app_id"] in apps
