"""Two rounds through a real Airflow: api-server, scheduler, dag-processor, triggerer.

Started with the demo's code (``devstack.airflow_local``) on a throw-away AIRFLOW_HOME
and free 127.0.0.1 ports, against the SeaweedFS fixture. Round 1 is triggered through
the REST API with ``max_rounds=2``; the simulated labeller answers the query set; the
DAG triggers round 2 itself, which trains on the new labels and ends the loop.
"""

from __future__ import annotations

import time

import pytest

from devstack.airflow_local import follow_loop
from devstack.labeller import LabellerThread, sample_seed_files, upload_seed
from tests.fixtures.airflow import DAG_ID

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.slow]

BATCH_SIZE = 20
#: The labeller answers this long after the query set appears, so the sensor defers.
LABEL_DELAY = 10


def _listening_addresses(components) -> set[tuple[str, int, str]]:
    """(ip, port, process name) of every TCP socket our Airflow processes listen on."""
    import psutil

    pids = {}
    for name, managed in components.processes.items():
        try:
            leader = psutil.Process(managed.process.pid)
        except psutil.NoSuchProcess:
            continue
        for proc in [leader, *leader.children(recursive=True)]:
            pids[proc.pid] = name
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add((conn.laddr.ip, conn.laddr.port, pids[conn.pid]))
    return found


def test_two_rounds_through_the_scheduler(airflow_deployment, seaweedfs, small_corpus):
    deployment = airflow_deployment
    api, components, setup = deployment.api, deployment.components, deployment.setup
    config = setup.config(corpus_path=str(small_corpus))
    client = seaweedfs.client()
    labeller = None
    started = time.monotonic()
    try:
        # Nothing listens anywhere but on loopback.
        listening = _listening_addresses(components)
        assert (("127.0.0.1", setup.settings.api_port, "api-server")) in listening
        assert {ip for ip, _, _ in listening} == {"127.0.0.1"}, listening

        labels, evaluation = sample_seed_files(config, setup.workspace.parent / "seed", size=230, eval_size=300)
        upload_seed(client, setup.bucket, setup.task, labels, evaluation)
        api.wait_for_dag(DAG_ID, timeout=180, components=components)
        conf = {
            "round": 1,
            "max_rounds": 2,
            "max_evals": 4,
            "batch_size": BATCH_SIZE,
            "corpus_path": str(small_corpus),
            "sensor_poke_seconds": 2,
            "sensor_timeout_seconds": 600,
        }
        first = api.trigger(DAG_ID, conf=conf)
        labeller = LabellerThread(client, config, poll_seconds=2, delay_seconds=LABEL_DELAY, echo=print)
        labeller.start()

        statuses = follow_loop(
            api, max_rounds=2, timeout=540, echo=print, check=components.check_running, poll_seconds=3
        )

        runs = {run["dag_run_id"]: run for run in api.dag_runs(DAG_ID)}
        second_id = f"round-2__{first['dag_run_id']}"
        assert set(runs) == {first["dag_run_id"], second_id}, "the DAG triggered round 2 itself, once"
        assert [runs[r]["state"] for r in (first["dag_run_id"], second_id)] == ["success", "success"]
        assert runs[second_id]["conf"]["round"] == 2 and runs[second_id]["conf"]["max_evals"] == 4

        assert [s["round"] for s in statuses] == [1, 2]
        assert statuses[0]["status"] == "continuing" and statuses[0]["labels_accepted"] == BATCH_SIZE
        assert statuses[1]["status"] == "stopped"
        assert statuses[1]["reason"] == "max_rounds reached: round 2 of 2"
        assert statuses[1]["query_csv_uri"] is None, "the last round sends no query set"
        assert statuses[1]["n_labelled"] == statuses[0]["n_labelled"] + BATCH_SIZE, (
            "round 2 trained on round 1's labels"
        )

        # Accuracy recorded for each round: workspace summaries and MLflow agree.
        from al_tasks.tracking import client as mlflow_client
        from al_tasks.workspace import TaskWorkspace

        workspace = TaskWorkspace(config)
        tracking = mlflow_client(config)
        for status in statuses:
            summary = workspace.read_summary(status["round"])
            assert 0 < summary["accuracy"] <= 1
            assert status["accuracy"] == pytest.approx(summary["accuracy"])
            run = tracking.get_run(summary["run_id"])
            assert run.data.metrics["accuracy"] == pytest.approx(summary["accuracy"])

        # The sensor waited in the triggerer (deferred), not in a worker slot: the
        # labeller answered LABEL_DELAY seconds after the query set appeared.
        sensor = {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, first["dag_run_id"])}["wait_for_labels"]
        assert sensor["state"] == "success"
        sensor_logs = (
            setup.settings.logs_folder
            / f"dag_id={DAG_ID}"
            / f"run_id={first['dag_run_id']}"
            / "task_id=wait_for_labels"
        )
        assert "Pausing task as DEFERRED" in (sensor_logs / "attempt=1.log").read_text(errors="replace")
        trigger_logs = list(sensor_logs.glob("attempt=1.log.trigger.*.log"))
        assert trigger_logs and "Trigger fired event" in trigger_logs[0].read_text(errors="replace")
        print(f"two rounds in {time.monotonic() - started:.0f} s")
    except BaseException:
        print(components.logs(lines=60))
        if labeller is not None:
            print("labeller errors:", labeller.errors)
        raise
    finally:
        if labeller is not None:
            labeller.stop()
