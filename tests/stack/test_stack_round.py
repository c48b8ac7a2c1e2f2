"""The team deployment without Docker (``devstack.stack``), on real services, end to end.

One module-scoped stack (state in a temporary folder, free 127.0.0.1 ports, its own
PostgreSQL databases ``al_stack_t_*`` and Redis database) runs one loop of two rounds
through the REST API with the simulated labeller:

* round 1: everything is where the deployment says (CeleryExecutor, both workers,
  metadata in PostgreSQL, MLflow server with artifacts in S3, Spark standalone
  applications, labels in the PostgreSQL label store); while ``wait_for_labels`` is
  deferred, the triggerer is restarted and the sensor still fires;
* round 2 (the faults): a second worker joins the Spark queue, the worker running
  ``tune`` is SIGKILLed, Airflow retries it on the live one and the round completes
  with no duplicate labels;
* finally ``down`` leaves no process and no port of the stack behind.

Run on its own (``make test-stack``): it starts some fifteen processes.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from datetime import datetime

import pytest

from devstack.airflow_local import DAG_ID, AirflowApi
from devstack.labeller import LabellerThread, sample_seed_files, upload_seed
from devstack.stack import Stack, free_ports
from devstack.stack_spec import ARTIFACTS_BUCKET, LABELLING_BUCKET, WORKERS
from tests.fixtures.airflow import _clean_environment

pytestmark = [pytest.mark.slow, pytest.mark.airflow_e2e]

TASK = "t_stack"
BATCH_SIZE = 20
DB_PREFIX = "al_stack_t"
#: The stack's Redis database (a developer's `make stack` uses 0).
REDIS_DB = 11
SPARK_TASKS = {"featurize", "tune", "query"}


class State:
    """What the ordered tests of this module hand on."""

    first_run: str = ""
    round_seconds: float = 0.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    env = _clean_environment()
    env.update(AL_TASK=TASK, AL_SPARK_TRIALS_PARALLELISM="2")
    stack = Stack(
        tmp_path_factory.mktemp("stack") / "state",
        ports=free_ports(),
        db_prefix=DB_PREFIX,
        redis_db=REDIS_DB,
        base_env=env,
    )
    try:
        stack.up(fresh_databases=True)
        yield stack
    except BaseException:
        for name, process in stack.processes.items():
            print(f"===== {name} =====\n{process.log_tail(40)}")
        raise
    finally:
        stack.down()


class MemorySampler(threading.Thread):
    """Peak RSS of each service's process group while the rounds run (for docs/deploy.md)."""

    def __init__(self, stack) -> None:
        super().__init__(daemon=True)
        self.stack, self.peak, self.stopping = stack, {}, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(5):
            for name, mb in self.stack.memory_mb().items():
                self.peak[name] = max(mb, self.peak.get(name, 0))


@pytest.fixture(scope="module")
def memory(stack):
    sampler = MemorySampler(stack)
    sampler.start()
    yield sampler
    sampler.stopping.set()
    print("peak RSS per service (MB):", json.dumps(sampler.peak), "load:", os.getloadavg())


@pytest.fixture(scope="module")
def api(stack):
    return AirflowApi(stack.api_url, "admin", stack.credentials["AIRFLOW_ADMIN_PASSWORD"])


@pytest.fixture(scope="module")
def s3(stack):
    from al_tasks.io.s3 import s3_client

    endpoint = f"http://127.0.0.1:{stack.placement.port('seaweedfs', 's3')}"
    return s3_client(endpoint, stack.credentials["AL_S3_ACCESS_KEY"], stack.credentials["AL_S3_SECRET_KEY"])


@pytest.fixture(scope="module")
def config(stack, small_corpus):
    from al_tasks.config import LoopConfig

    return LoopConfig.from_env(stack.env_of("airflow-worker")).with_overrides({"corpus_path": str(small_corpus)})


def _sql(stack, purpose: str, query: str, *args) -> list[tuple]:
    import psycopg2

    connection = psycopg2.connect(stack.placement.postgres_url(purpose, stack.credentials, "postgresql"))
    try:
        with connection.cursor() as cursor:
            cursor.execute(query, args)
            return cursor.fetchall()
    finally:
        connection.close()


def _task_instances(api, run_id: str) -> dict[str, dict]:
    return {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}


def _wait(predicate, timeout: float, what: str, stack=None, poll: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _run_state(api, run_id: str) -> str:
    return api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_round_one_runs_on_the_team_stack(stack, memory, api, s3, config, small_corpus, tmp_path):
    started = time.monotonic()
    labels, evaluation = sample_seed_files(config, tmp_path / "seed", size=230, eval_size=300)
    upload_seed(s3, LABELLING_BUCKET, TASK, labels, evaluation)
    api.wait_for_dag(DAG_ID, timeout=240)
    api.request("PATCH", "/api/v2/dags/daily_ingest", json={"is_paused": True})  # not part of this test
    conf = {
        "round": 1,
        "max_rounds": 2,
        "max_evals": 4,
        "batch_size": BATCH_SIZE,
        "corpus_path": str(small_corpus),
        "sensor_poke_seconds": 2,
        "sensor_timeout_seconds": 900,
    }
    run_id = api.trigger(DAG_ID, conf=conf)["dag_run_id"]
    State.first_run = run_id

    # The sensor waits in the triggerer; restarting the triggerer there loses nothing.
    _wait(lambda: _task_instances(api, run_id).get("wait_for_labels", {}).get("state") == "deferred", 420, "deferral")
    stack.stop_service("airflow-triggerer")
    stack.start_service("airflow-triggerer")
    labeller = LabellerThread(s3, config, poll_seconds=2, delay_seconds=0)
    labeller.start()
    try:
        _wait(lambda: _run_state(api, run_id) in ("success", "failed"), 300, "round 1")
    finally:
        labeller.stop()
    State.round_seconds = time.monotonic() - started
    print(f"round 1 on the stack: {State.round_seconds:.0f} s")
    tis = _task_instances(api, run_id)
    assert _run_state(api, run_id) == "success", {t: ti["state"] for t, ti in tis.items()}
    assert tis["wait_for_labels"]["state"] == "success"
    assert tis["ingest_labels"]["state"] == "success"

    # CeleryExecutor (the configuration through the REST API; Celery's results in PostgreSQL).
    assert _config_option(api, "core", "executor") == "CeleryExecutor"
    assert _sql(stack, "airflow", "SELECT count(*) FROM celery_taskmeta")[0][0] >= len(SPARK_TASKS)
    # The round's tasks ran on both workers, the Spark-heavy ones on the Spark queue's.
    hosts = {ti["hostname"] for ti in tis.values() if ti["state"] == "success"}
    assert {role.celery_name for role in WORKERS} <= hosts, hosts
    assert {tis[t]["hostname"] for t in SPARK_TASKS} == {"worker-spark"}
    assert {tis[t]["queue"] for t in SPARK_TASKS} == {"spark"}

    # Airflow's metadata is in PostgreSQL.
    runs = _sql(stack, "airflow", "SELECT run_id, state FROM dag_run WHERE dag_id = %s", DAG_ID)
    assert (run_id, "success") in runs

    _assert_mlflow_and_artifacts(stack, api, run_id, s3)
    _assert_spark_applications(stack, tis)


def _config_option(api, section: str, option: str) -> str:
    response = api.session.get(
        f"{api.base_url}/api/v2/config/section/{section}/option/{option}",
        headers={"Authorization": f"Bearer {api.token()}", "Accept": "application/json"},
        timeout=30,
    )
    assert response.ok, response.text
    return response.json()["sections"][0]["options"][0]["value"]


def _assert_mlflow_and_artifacts(stack, api, run_id, s3):
    from mlflow import MlflowClient

    trained = api.xcom(DAG_ID, run_id, "tune")
    tracking = MlflowClient(f"http://127.0.0.1:{stack.placement.port('mlflow', 'http')}")
    parent = tracking.get_run(trained["run_id"])
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:"), "artifacts go through the server"
    nested = tracking.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(nested) == 4, "one nested run per trial (max_evals=4)"
    versions = tracking.search_model_versions(f"run_id = '{parent.info.run_id}'")
    assert [str(v.version) for v in versions] == [str(trained["model_version"])]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=ARTIFACTS_BUCKET).get("Contents", [])]
    assert any(key.endswith("MLmodel") for key in keys), keys[:20]
    assert any(parent.info.run_id in key or "models/" in key for key in keys), keys[:20]


def _assert_spark_applications(stack, tis):
    port = stack.placement.port("spark-master", "webui")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/", timeout=10) as response:
        master = json.load(response)
    apps = master["completedapps"] + master["activeapps"]
    for task_id in SPARK_TASKS:
        ti = tis[task_id]
        start, end = _epoch(ti["start_date"]) * 1000, _epoch(ti["end_date"]) * 1000
        assert any(start - 1000 <= app["starttime"] <= end for app in apps), (task_id, apps)
    log = stack.logs / "airflow" / f"dag_id={DAG_ID}" / f"run_id={tis['tune']['dag_run_id']}" / "task_id=tune"
    text = "\n".join(p.read_text(errors="replace") for p in log.glob("attempt=*.log"))
    # hyperopt's SparkTrials logs its summary through the "hyperopt-spark" logger.
    assert '"logger":"hyperopt-spark"' in text and "4 succeeded" in text, text[-2000:]


def test_accepted_labels_are_rows_in_the_postgres_label_store(stack):
    """Round 1 accepted BATCH_SIZE labels; the killed worker's retry added none twice."""
    assert State.first_run, "round 1 did not run"
    # Schema of al_tasks/labelling/store_sql.py (table al_label_rows: task, id, label, round, ...).
    rows = _sql(stack, "labels", "SELECT round, count(*) FROM al_label_rows WHERE task = %s GROUP BY round", TASK)
    by_round = dict(rows)
    assert by_round.get(1) == BATCH_SIZE, by_round
    duplicates = _sql(
        stack,
        "labels",
        "SELECT id, round, count(*) FROM al_label_rows WHERE task = %s GROUP BY id, round HAVING count(*) > 1",
        TASK,
    )
    assert duplicates == []


def test_a_killed_worker_is_replaced_and_the_round_completes(stack, api):
    assert State.first_run, "round 1 did not run"
    second = f"round-2__{State.first_run}"
    # A second worker joins the Spark queue (scaling a queue is starting one more worker).
    started = time.monotonic()
    stack.start_extra_worker("worker-spare", ("spark",))
    tune = _wait(
        lambda: (ti := _task_instances(api, second).get("tune")) and ti["state"] == "running" and ti["hostname"] and ti,
        300,
        "round 2's tune to run",
        poll=0.5,
    )
    victim = {"worker-spark": "airflow-worker-spark", "worker-spare": "airflow-worker-worker-spare"}[tune["hostname"]]
    stack.stop_service(victim, signal.SIGKILL)
    _wait(lambda: _run_state(api, second) in ("success", "failed"), 420, "round 2 after the kill")
    print(f"round 2 with the kill and the retry: {time.monotonic() - started:.0f} s")
    tis = _task_instances(api, second)
    assert _run_state(api, second) == "success", {t: ti["state"] for t, ti in tis.items()}
    assert tis["tune"]["try_number"] >= 2, "tune was retried"
    assert tis["tune"]["hostname"] != tune["hostname"], "the retry ran on the live worker"
    status = api.xcom(DAG_ID, second, "loop_status")
    assert status["status"] == "stopped" and status["reason"] == "max_rounds reached: round 2 of 2"


def test_down_leaves_nothing_behind(stack, memory):
    import psutil

    status = {row["service"]: row for row in stack.status()}
    survivors = {name for name, row in status.items() if row["alive"]}
    memory.stopping.set()
    # Nothing of the stack listens anywhere but on loopback.
    pids, _ = stack.leftovers()
    listening = {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.pid in set(pids)
    }
    assert listening and {ip for ip, _ in listening} <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    print("peak RSS per service (MB):", json.dumps(memory.peak), "load:", os.getloadavg())
    assert survivors >= {"airflow-scheduler", "airflow-worker", "mlflow", "spark-master", "seaweedfs"}
    stack.down()
    pids, ports = stack.leftovers()
    assert pids == [] and ports == [], (pids, ports)
