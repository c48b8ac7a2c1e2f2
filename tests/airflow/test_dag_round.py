"""One full round of the DAG with ``dag.test()``: real SeaweedFS, Spark, MLflow, Airflow DB.

The test seeds the bucket, starts a labeller thread that waits for the round's query
set in the outbox and answers it (ground truth, plus one bad label and one unknown id),
and runs the DAG in this process. The deferrable sensor's trigger runs in line.
Then it checks what a user would look at: the outbox CSV, the label store, the
rejects (workspace and bucket), the processed file, MLflow, and the next round's run.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from al_tasks.io import s3
from al_tasks.io.people_csv import FORMULA_TRIGGERS
from al_tasks.labelling.export import QUERY_CSV_COLUMNS
from devstack.labeller import answer_query_set, load_truth, sample_seed_files, upload_seed
from tests.fixtures.airflow import DAG_ID, OutboxAnswerer, load_dag, xcom_of

pytestmark = pytest.mark.slow

MAX_EVALS = 4
BATCH_SIZE = 20
UNKNOWN_ID = "999999999999"
BAD_LABEL = "Mortgages"
#: A spreadsheet's "save as" name for the round-1 file: must be recognised.
INBOX_NAME = "Round-1 (1).CSV"


def _answer_with_two_bad_rows(truth: dict[str, str], classes: list[str]):
    """Answer every row from ground truth, then spoil row 1's label and add an unknown id."""
    import numpy as np

    def answer(query_csv: bytes) -> bytes:
        good = answer_query_set(query_csv, truth, noise=0.0, partial=0.0, classes=classes, rng=np.random.default_rng(0))
        rows = list(csv.reader(io.StringIO(good.decode("utf-8-sig"), newline="")))
        header = [c.strip().lower() for c in rows[0]]
        rows[1][header.index("label")] = BAD_LABEL
        extra = [""] * len(header)
        extra[header.index("id")], extra[header.index("label")] = UNKNOWN_ID, classes[0]
        rows.append(extra)
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\r\n").writerows(rows)
        return out.getvalue().encode("utf-8-sig")

    return answer


def _conf(small_corpus) -> dict:
    return {
        "round": 1,
        "max_evals": MAX_EVALS,
        "batch_size": BATCH_SIZE,
        "corpus_path": str(small_corpus),
        "sensor_poke_seconds": 1,
        "sensor_timeout_seconds": 900,
    }


@pytest.fixture(scope="module")
def first_round(airflow_in_process, seaweedfs, small_corpus, tmp_path_factory):
    """Round 1 through ``dag.test()``, with a labeller thread answering the query set
    (ground truth, one bad label, one unknown id) and alerts to a local webhook.

    Returns what the tests look at; asserts nothing itself.
    """
    from tests.fixtures.airflow import WebhookReceiver

    setup = airflow_in_process
    client = seaweedfs.client()
    config = setup.config(corpus_path=str(small_corpus))
    labels, evaluation = sample_seed_files(config, tmp_path_factory.mktemp("seed"), size=230, eval_size=300)
    upload_seed(client, setup.bucket, setup.task, labels, evaluation)
    truth = load_truth(config.corpus_path, id_column=config.id_column, label_column=config.label_column)
    answerer = OutboxAnswerer(
        client,
        setup.bucket,
        f"outbox/{setup.task}/round-1.csv",
        f"inbox/{setup.task}/{INBOX_NAME}",
        _answer_with_two_bad_rows(truth, list(config.classes)),
        timeout=900,
    )
    receiver = WebhookReceiver()
    answerer.start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            # Alerts go to a real local webhook; a minimum no 4-trial model reaches makes one fire.
            mp.setenv("AIRFLOW_CONN_AL_ALERT_WEBHOOK", receiver.url)
            run = load_dag().test(run_conf={**_conf(small_corpus), "alert_min_accuracy": 0.99})
    finally:
        answerer.stop()
        receiver.close()
    return {
        "run": run,
        "answerer": answerer,
        "webhook": receiver.bodies,
        "config": config,
        "client": client,
        "setup": setup,
        "truth": truth,
    }


def test_one_round_end_to_end(first_round):
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState

    run, answerer, setup = first_round["run"], first_round["answerer"], first_round["setup"]
    client, config, task = first_round["client"], first_round["config"], first_round["setup"].task
    truth = first_round["truth"]
    assert answerer.error is None, f"labeller thread failed: {answerer.error!r}"
    assert answerer.answered is not None, "the query set never appeared in the outbox"

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, f"run {run.run_id} ended {run.state}: {states}"
    assert all(state == "success" for state in states.values()), states

    # --- the outbox: query set and manifest -------------------------------------------------
    query_csv = s3.read_bytes(client, setup.bucket, f"outbox/{task}/round-1.csv")
    manifest = json.loads(s3.read_bytes(client, setup.bucket, f"outbox/{task}/round-1.manifest.json"))
    assert query_csv.startswith(b"\xef\xbb\xbf"), "UTF-8 BOM, so spreadsheets detect the encoding"
    rows = list(csv.reader(io.StringIO(query_csv.decode("utf-8-sig"), newline="")))
    assert tuple(rows[0]) == QUERY_CSV_COLUMNS
    body = rows[1:]
    assert len(body) == BATCH_SIZE == manifest["counts"]["items"]
    assert [int(r[0]) for r in body] == list(range(1, BATCH_SIZE + 1)), "ranks 1..k in order"
    assert [r[1] for r in body] == manifest["ids"], "manifest lists the ids in rank order"
    assert all(r[5] == "" for r in body), "label column left empty for the labeller"
    assert all(r[3] in config.classes for r in body), "model_guess is a class"
    confidences = [float(r[4]) for r in body]
    assert all(0 <= c <= 1 for c in confidences)
    # No cell may start a spreadsheet formula; neutralised ones start with a quote.
    for row in body:
        for cell in row:
            assert not cell.startswith(FORMULA_TRIGGERS), f"formula-like cell not neutralised: {cell[:40]!r}"
    neutralised = sum(1 for r in body for c in (r[2], r[3]) if c.startswith("'") and c[1:].startswith(FORMULA_TRIGGERS))
    assert neutralised == manifest["counts"]["neutralised_cells"]

    # --- ingest: label store, rejects, processed ---------------------------------------------
    from al_tasks.workspace import TaskWorkspace

    workspace = TaskWorkspace(config)
    history = workspace.store.history()
    round_1 = history[history["round"] == 1]
    assert len(round_1) == BATCH_SIZE - 1, "every answered row but the bad label"
    assert set(round_1["id"]) == set(manifest["ids"][1:])
    assert all(truth[i] == label for i, label in zip(round_1["id"], round_1["label"]))
    assert set(round_1["source"]) == {f"s3://{setup.bucket}/inbox/{task}/{INBOX_NAME}"}
    assert len(history[history["round"] == 0]) > 0, "the seed is round 0"
    assert len(workspace.evaluation_set.read()) == 300, "the evaluation file became the fixed evaluation set"

    import pandas as pd

    rejects = pd.read_csv(workspace.rejects_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    reasons = dict(zip(rejects["id"], rejects["reason"]))
    assert set(reasons) == {manifest["ids"][0], UNKNOWN_ID}
    assert f"label '{BAD_LABEL}' is not one of" in reasons[manifest["ids"][0]]
    assert "did you mean 'mortgage'?" in reasons[manifest["ids"][0]]
    assert reasons[UNKNOWN_ID] == f"unknown id '{UNKNOWN_ID}': not in this round's query set"
    bucket_rejects = pd.read_csv(
        io.BytesIO(s3.read_bytes(client, setup.bucket, f"rejects/{task}/round-1.csv")), dtype=str, keep_default_na=False
    )
    assert dict(zip(bucket_rejects["id"], bucket_rejects["reason"])) == reasons
    assert set(bucket_rejects["line"]) == {"2", str(BATCH_SIZE + 2)}, "spreadsheet row numbers"
    assert s3.list_keys(client, setup.bucket, f"inbox/{task}/") == []
    assert s3.list_keys(client, setup.bucket, f"processed/{task}/") == [f"processed/{task}/{INBOX_NAME}"]

    # --- MLflow: the round's run, its metrics and nested trials, the champion ------------------
    from al_tasks.tracking import client as mlflow_client

    tracking = mlflow_client(config)
    experiment = tracking.get_experiment_by_name(config.experiment_name)
    round_runs = tracking.search_runs(
        [experiment.experiment_id], "tags.`al.round` = '1' and attributes.run_name = 'round-1'"
    )
    assert len(round_runs) == 1
    round_run = round_runs[0]
    summary = workspace.read_summary(1)
    assert round_run.info.run_id == summary["run_id"]
    assert round_run.data.metrics["accuracy"] == pytest.approx(summary["accuracy"])
    assert 0 < round_run.data.metrics["accuracy"] <= 1
    assert round_run.data.metrics["n_labelled"] == summary["n_labelled"] > 0
    trials = tracking.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{round_run.info.run_id}'")
    # A best C at a bound of its range is searched again in a shifted range (half the trials).
    assert len(trials) == MAX_EVALS + summary["tuning_c_shifts"] * (MAX_EVALS // 2)
    # The round's tuning bound check is in its MLflow run and its summary.
    assert round_run.data.tags["al.tuning_c_at_bound"] == summary["tuning_c_at_bound"]
    assert round_run.data.metrics["tuning_c_at_bound"] == float(summary["tuning_c_at_bound"] != "no")
    champion = tracking.get_model_version_by_alias(config.model_name, "champion")
    assert str(champion.version) == summary["model_version"], "the first model is always promoted"

    # --- alerts: checked against the thresholds of this run, delivered to the webhook ----------
    alerted = _xcom(run, "alert_check")
    assert [a["kind"] for a in alerted["alerts"]] == ["below_threshold"]
    assert alerted["sent"] == ["webhook:al_alert_webhook:below_threshold"]
    (payload,) = first_round["webhook"]
    assert payload["alert"]["kind"] == "below_threshold" and payload["alert"]["round_number"] == 1
    assert payload["alert"]["accuracy"] == pytest.approx(summary["accuracy"])
    assert payload["alert"]["threshold"] == 0.99

    # --- the loop: status, decision and the next round's run -----------------------------------
    decision = _xcom(run, "next_round_decision")
    assert decision["continue"] is True and decision["reason"] is None
    next_run_id = f"round-2__{run.run_id}"
    assert decision["next_run_id"] == next_run_id
    next_runs = DagRun.find(dag_id=DAG_ID, run_id=next_run_id)
    assert len(next_runs) == 1, "trigger_next_round created round 2"
    next_conf = next_runs[0].conf
    assert next_conf["round"] == 2 and next_conf["loop_id"] == run.run_id
    assert next_conf["max_evals"] == MAX_EVALS and next_conf["batch_size"] == BATCH_SIZE
    assert next_conf["sensor_poke_seconds"] == 1 and next_conf["alert_min_accuracy"] == 0.99, (
        "the same Params carry over"
    )
    status = _xcom(run, "loop_status")
    assert status["status"] == "continuing"
    assert status["labels_accepted"] == BATCH_SIZE - 1 and status["labels_rejected"] == 2
    assert status["query_csv_uri"] == f"s3://{setup.bucket}/outbox/{task}/round-1.csv"
    assert status["accuracy"] == pytest.approx(summary["accuracy"])


def test_rerunning_a_round_is_idempotent_and_does_not_fork_the_loop(first_round, small_corpus):
    """Round 1 again, as part of the same loop (what clearing its run amounts to): the
    labelled file is found in processed/, no label is stored twice, and round 2, which
    already exists, is not triggered again."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.state import DagRunState

    from al_tasks.workspace import TaskWorkspace

    config = first_round["config"]
    first_run_id = first_round["run"].run_id
    manifest_ids = _xcom(first_round["run"], "query")["query_ids"]
    store_rows = len(TaskWorkspace(config).store.history())
    runs_before = {r.run_id for r in DagRun.find(dag_id=DAG_ID)}

    run = load_dag().test(run_conf={**_conf(small_corpus), "loop_id": first_run_id})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == DagRunState.SUCCESS, states
    assert states["wait_for_labels"] == "success", "nothing to wait for: the file was already ingested"
    assert states["trigger_next_round"] == "skipped"
    assert {r.run_id for r in DagRun.find(dag_id=DAG_ID)} == runs_before | {run.run_id}, "no second round 2"

    ingested = _xcom(run, "ingest_labels")
    assert ingested["re_run"] is True and ingested["added_to_store"] == 0
    assert ingested["accepted"] == BATCH_SIZE - 1, "the same query set, the same answers"
    assert len(TaskWorkspace(config).store.history()) == store_rows
    assert _xcom(run, "query")["query_ids"] == manifest_ids
    status = _xcom(run, "loop_status")
    assert status["status"] == "continuing"
    assert status["detail"] == f"round 2 already exists as run round-2__{first_run_id}"


def _xcom(run, task_id: str, key: str = "return_value"):
    value = xcom_of(run, task_id, key)
    assert value is not None, f"no XCom {key!r} from {task_id!r}"
    return value


def test_sensor_timeout_is_a_skip_but_an_s3_error_fails(airflow_in_process):
    """What the triggerer hands back to the sensor: a timeout becomes a skip (the loop
    stops with "labels stopped arriving"); an S3 error stays a failure."""
    from airflow.sdk.exceptions import AirflowException, AirflowSkipException
    from al_sensors import LabelFileSensor

    sensor = LabelFileSensor(
        task_id="wait_for_labels", bucket_key="inbox/t/round-1.csv", timeout_seconds=60, poke_seconds=1
    )
    assert sensor.deferrable and sensor.use_regex and not sensor.wildcard_match
    with pytest.raises(AirflowSkipException, match="no labelled file arrived before the timeout"):
        sensor.resume_execution("__fail__", {"error": "Trigger timeout"}, context={})
    with pytest.raises(AirflowException, match="access denied") as failure:
        sensor.resume_execution(
            "execute_complete", {"event": {"status": "error", "message": "access denied"}}, context={}
        )
    assert not isinstance(failure.value, AirflowSkipException)
