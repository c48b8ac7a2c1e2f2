"""The wait for labels survives restarts and outages, with the real scheduler, triggerer
and SeaweedFS.

The DAG here is the loop's own wait and ingest (``LabelFileSensor`` ->
``IngestLabelsOperator``, wired as in ``dags/active_learning_loop.py``) without the
training in front, so a test takes a minute, not ten. Its SeaweedFS is this module's
own: it is stopped and started again on the same data folder and ports.

* the scheduler and the triggerer are SIGKILLed while ``wait_for_labels`` is deferred and
  started again: the wait goes on, fires when the file arrives, the round ingests once;
* SeaweedFS is stopped for 60 s while the sensor waits: the trigger waits through it
  (``al_sensors.LabelFileTrigger``), the run does not fail and fires when the file arrives.
"""

from __future__ import annotations

import dataclasses
import signal
import time

import pandas as pd
import pytest

from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS
from al_tasks.io import s3
from al_tasks.labelling.export import export_query_set
from al_tasks.workspace import TaskWorkspace
from devstack.airflow_local import AirflowApi, AirflowComponents, prepare_airflow_home, run_airflow
from devstack.processes import port_is_free, signal_group, start_process
from devstack.seaweedfs import start_seaweedfs
from tests.fixtures.airflow import AirflowTestSetup, _clean_environment, _settings
from tests.fixtures.s3 import ACCESS_KEY, BUCKET, SECRET_KEY

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.slow]

DAG_ID = "label_wait_probe"
TASK = "t_wait_survives"
ITEMS = 12
OUTAGE_SECONDS = 60
PROBE_DAG = """
from datetime import timedelta

from airflow.sdk import DAG
from al_common import MACROS, loop_params
from al_operators import IngestLabelsOperator
from al_sensors import LabelFileSensor

with DAG(
    dag_id="label_wait_probe",
    schedule=None,
    catchup=False,
    max_active_runs=1,
    params=loop_params(),
    user_defined_macros=MACROS,
    default_args={"retries": 0},
) as dag:
    wait_for_labels = LabelFileSensor(
        task_id="wait_for_labels",
        retries=6,
        retry_delay=timedelta(seconds=5),
        retry_exponential_backoff=True,
        bucket_name="{{ al_setting(params, 'bucket') }}",
        bucket_key="{{ al_inbox_key_regex(params) }}",
        timeout_seconds="{{ al_setting(params, 'sensor_timeout_seconds') }}",
        poke_seconds="{{ al_setting(params, 'sensor_poke_seconds') }}",
    )
    IngestLabelsOperator(task_id="ingest_labels", arrival=wait_for_labels.output)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own SeaweedFS (it is stopped and restarted by a test)."""
    base = tmp_path_factory.mktemp("seaweedfs_outage")
    started = start_seaweedfs(
        base / "data", bucket=BUCKET, access_key=ACCESS_KEY, secret_key=SECRET_KEY, s3_port=None, timeout=60
    )
    holder = {"server": started}
    yield holder
    holder["server"].stop()


@pytest.fixture(scope="module")
def deployment(server, tmp_path_factory):
    base = tmp_path_factory.mktemp("airflow_wait")
    settings, workspace = _settings(base, server["server"], TASK)
    dags = base / "dags"
    dags.mkdir()
    (dags / "label_wait_probe.py").write_text(PROBE_DAG)
    extra = {
        **settings.extra_env,
        # A killed triggerer's triggers move to a live one once its heartbeat is this old.
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
    }
    settings = dataclasses.replace(settings, dags_folder=dags, extra_env=extra)
    env = prepare_airflow_home(settings, _clean_environment())
    run_airflow(["db", "migrate"], env, timeout=300)
    components = AirflowComponents(settings, env).start(timeout=180)
    try:
        api = AirflowApi(settings.base_url, settings.admin_user, settings.admin_password)
        api.wait_for_dag(DAG_ID, timeout=180, components=components, dag_file="label_wait_probe")
        setup = AirflowTestSetup(settings, env, workspace, BUCKET, TASK)
        yield setup, components, api
    finally:
        components.stop()


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    corpus = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, nrows=400)
    return corpus.sample(ITEMS * 2, random_state=5).reset_index(drop=True)


def query_round(setup: AirflowTestSetup, sample: pd.DataFrame, round_number: int) -> tuple[pd.DataFrame, object]:
    """Write round ``n``'s query set and manifest into the workspace; (its rows, config)."""
    config = setup.config()
    rows = sample.iloc[(round_number - 1) * ITEMS : round_number * ITEMS]
    out = TaskWorkspace(config).round_dir(round_number)
    export_query_set(
        pd.DataFrame(
            {
                "id": rows["Complaint ID"].astype("int64"),
                "text": rows["Consumer complaint narrative"],
                "predicted_label": "other",
                "confidence": 0.5,
            }
        ),
        out / "query.csv",
        out / "manifest.json",
        round_number=round_number,
        model_version="1",
        strategy="margin",
        task=TASK,
        classes=PRODUCT_GROUPS,
    )
    return rows, config


def labelled(rows: pd.DataFrame) -> bytes:
    body = "".join(f"{i},{t}\r\n" for i, t in zip(rows["Complaint ID"], rows["Product group"]))
    return ("\ufeffid,label\r\n" + body).encode()


def state_of(api, run_id: str, task_id: str) -> dict:
    return {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}[task_id]


def wait_for(predicate, what: str, timeout: float, components) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        components.check_running()
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_state(api, run_id: str) -> str:
    return next(r["state"] for r in api.dag_runs(DAG_ID) if r["dag_run_id"] == run_id)


def trigger_and_wait_deferred(api, components, round_number: int) -> str:
    conf = {"round": round_number, "sensor_poke_seconds": 2, "sensor_timeout_seconds": 900}
    run_id = api.trigger(DAG_ID, conf=conf)["dag_run_id"]
    wait_for(
        lambda: state_of(api, run_id, "wait_for_labels")["state"] == "deferred", "the deferred sensor", 180, components
    )
    return run_id


def finish(api, components, run_id: str) -> dict:
    wait_for(lambda: run_state(api, run_id) in {"success", "failed"}, "the run to finish", 240, components)
    tis = {ti["task_id"]: ti for ti in api.task_instances(DAG_ID, run_id)}
    assert run_state(api, run_id) == "success", {k: (v["state"], v["try_number"]) for k, v in tis.items()}
    return tis


def test_killed_scheduler_and_triggerer_resume_the_wait(deployment, server, sample):
    setup, components, api = deployment
    rows, config = query_round(setup, sample, 1)
    client = server["server"].client()
    try:
        run_id = trigger_and_wait_deferred(api, components, 1)
        for name in ("scheduler", "triggerer"):
            managed = components.processes[name]
            signal_group(managed.process.pid, signal.SIGKILL)
            managed.process.wait(timeout=30)
        time.sleep(3)
        for name in ("scheduler", "triggerer"):
            components.processes[name] = start_process(
                name, components.command(name), components.env, components.log_dir / f"{name}.log"
            )
        time.sleep(15)  # the sensor waits on, in the new triggerer
        assert state_of(api, run_id, "wait_for_labels")["state"] == "deferred"
        s3.write_bytes(client, config.bucket, config.task_prefix("inbox_prefix") + "round-1.csv", labelled(rows))
        tis = finish(api, components, run_id)
        assert tis["wait_for_labels"]["try_number"] == 1, "resumed, not retried"
        summary = api.xcom(DAG_ID, run_id, "ingest_labels")
        assert (summary["accepted"], summary["added_to_store"]) == (ITEMS, ITEMS)
        history = TaskWorkspace(config).store.history()
        assert len(history[history["round"] == 1]) == ITEMS, "the round was ingested once"
    except BaseException:
        print(components.logs(lines=40))
        raise


def test_an_s3_outage_while_waiting_does_not_end_the_loop(deployment, server, sample):
    setup, components, api = deployment
    rows, config = query_round(setup, sample, 2)
    try:
        run_id = trigger_and_wait_deferred(api, components, 2)
        old = server["server"]
        ports = dict(old.ports)
        s3_port = ports.pop("s3.port")
        old.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        # weed's own children may take a moment to let go of their ports.
        wait_for(lambda: all(port_is_free(p) for p in old.ports.values()), "the ports to be free", 30, components)
        assert state_of(api, run_id, "wait_for_labels")["state"] == "deferred", "the wait goes on during the outage"
        server["server"] = start_seaweedfs(
            old.data_dir,
            bucket=BUCKET,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            s3_port=s3_port,
            ports=ports,
            log_path=old.log_path,
            timeout=60,
        )
        print(f"S3 was down for {time.monotonic() - stopped:.0f} s")
        client = server["server"].client()
        s3.write_bytes(client, config.bucket, config.task_prefix("inbox_prefix") + "Round-2 (1).CSV", labelled(rows))
        tis = finish(api, components, run_id)
        assert tis["wait_for_labels"]["try_number"] == 1, "waited through the outage, no retry needed"
        summary = api.xcom(DAG_ID, run_id, "ingest_labels")
        assert (summary["accepted"], summary["added_to_store"]) == (ITEMS, ITEMS)
        logs = setup.settings.logs_folder / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=wait_for_labels"
        trigger_log = "".join(p.read_text(errors="replace") for p in logs.glob("attempt=1.log.trigger.*.log"))
        assert "S3 is unreachable" in trigger_log and "still waiting" in trigger_log
    except BaseException:
        print(components.logs(lines=40))
        raise
