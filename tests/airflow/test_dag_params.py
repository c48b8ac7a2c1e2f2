"""The DAGs as Airflow parses them: Params generated from LoopConfig, the data flow in XComArgs."""

from __future__ import annotations

from al_tasks.config import SECTIONS, LoopConfig, settings
from tests.fixtures.airflow import load_dag


def test_every_setting_is_a_param_with_its_default_and_description(airflow_in_process):
    dag = load_dag()
    params = dag.params
    defaults = LoopConfig.from_env(airflow_in_process.env)
    for info in settings():
        assert info.name in params, info.name
        param = params.get_param(info.name)
        expected = getattr(defaults, info.name)
        assert param.value == (list(expected) if isinstance(expected, tuple) else expected), info.name
        assert param.description == info.description and param.schema["title"] == info.title
        assert param.schema["section"] == SECTIONS[info.section]
        if info.choices:
            assert param.schema["enum"] == list(info.choices)
        if info.minimum is not None:
            assert param.schema["minimum"] == info.minimum
    assert {"round", "loop_id"} <= set(params)
    daily = load_dag("daily_ingest", "daily_ingest.py").params
    assert {info.name for info in settings()} | {"date", "landing", "alias"} <= set(daily)


def test_params_refuse_what_loop_config_refuses(airflow_in_process):
    import pytest
    from airflow.sdk.exceptions import ParamValidationError

    param = load_dag().params.get_param("task")
    with pytest.raises(ParamValidationError):
        param.resolve("..")
    assert param.resolve("debt.v2") == "debt.v2"


def test_the_dag_file_wires_the_data_flow_through_xcom_args(airflow_in_process):
    dag = load_dag()
    upstream = {task.task_id: sorted(task.upstream_task_ids) for task in dag.tasks}
    assert upstream["export"] == ["query"]
    assert upstream["ingest_labels"] == ["wait_for_labels"]
    assert upstream["next_round_decision"] == ["ingest_labels", "plan_round"]
    assert upstream["query"] == ["featurize", "plan_round", "tune"]
    assert set(upstream["loop_status"]) == {
        "export",
        "ingest_labels",
        "next_round_decision",
        "plan_round",
        "promote",
        "trigger_next_round",
        "tune",
    }


def test_spark_heavy_tasks_go_to_the_configured_queue(airflow_in_process, monkeypatch):
    spark_tasks = {"featurize", "tune", "query"}
    embedded = load_dag()
    assert {task.queue for task in embedded.tasks} == {"default"}, "embedded setup: one queue"
    monkeypatch.setenv("AL_SPARK_QUEUE", "spark")
    dag = load_dag()
    assert {task.task_id for task in dag.tasks if task.queue == "spark"} == spark_tasks
    assert {task.queue for task in dag.tasks if task.task_id not in spark_tasks} == {"default"}
    daily = load_dag("daily_ingest", "daily_ingest.py")
    assert {task.task_id: task.queue for task in daily.tasks} == {"stage_landing": "default", "score_day": "spark"}
