"""docker-compose.yaml against the one definition of the stack (devstack/stack_spec.py)."""

from __future__ import annotations

import re

import pytest
import yaml

from al_tasks.config import REPO_ROOT
from devstack import stack_spec as spec
from devstack.compose import COMPOSE_ONLY_ENV, render_compose

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_the_committed_file_is_the_generated_one():
    assert COMPOSE_FILE.read_text() == render_compose(), (
        "docker-compose.yaml is stale: python -m devstack.stack compose > docker-compose.yaml"
    )


def test_same_services_as_the_spec(compose):
    assert list(compose["services"]) == list(spec.SERVICE_NAMES)
    issue_services = {
        "postgres",
        "redis",
        "seaweedfs",
        "mlflow",
        "spark-master",
        "spark-worker",
        "airflow-init",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
    assert issue_services <= set(compose["services"])


@pytest.mark.parametrize("service", [s for s in spec.SERVICES if not s.external], ids=lambda s: s.name)
def test_same_command(compose, service):
    entry = compose["services"][service.name]
    assert [*entry["entrypoint"], *entry["command"]] == spec.command(service, spec.compose_placement())
    assert entry["entrypoint"][0] == service.command[0], "the program itself, not a wrapper script"


@pytest.mark.parametrize("service", spec.SERVICES, ids=lambda s: s.name)
def test_same_environment_names(compose, service):
    names = set(compose["services"][service.name].get("environment", {}))
    assert set(service.env) <= names
    allowed_extra = set(COMPOSE_ONLY_ENV) | {"SPARK_LOCAL_IP", "SPARK_NO_DAEMONIZE"}
    assert names - set(service.env) <= allowed_extra


def test_published_ports_are_the_spec_ports_on_loopback_only(compose):
    published = {}
    for name, entry in compose["services"].items():
        for mapping in entry.get("ports", []):
            host_ip, host_port, container_port = mapping.split(":")
            assert host_ip == "127.0.0.1", mapping
            assert host_port == container_port
            published[(name, int(container_port))] = True
    expected = {(s.name, s.ports[p]) for s in spec.SERVICES for p in s.publish}
    assert set(published) == expected
    assert ("airflow-api-server", 8080) in published and ("mlflow", 5000) in published


def test_same_queues_and_one_worker_serves_the_spark_queue(compose):
    served = {}
    for name, entry in compose["services"].items():
        command = entry.get("command", [])
        if "--queues" in command:
            served[name] = tuple(command[command.index("--queues") + 1].split(","))
            assert entry["labels"]["al.queues"] == ",".join(served[name])
    assert served == {role.service: role.queues for role in spec.WORKERS}
    assert [name for name, queues in served.items() if spec.SPARK_QUEUE in queues] == ["airflow-worker-spark"]
    for name in served:
        assert compose["services"][name]["environment"]["AL_SPARK_QUEUE"] == spec.SPARK_QUEUE
        assert compose["services"][name]["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_workers_scale_and_everything_shares_the_workspace(compose):
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "hostname" not in worker and "ports" not in worker
    assert "%h" in " ".join(worker["command"]), "each replica names itself after its container"
    assert "workspace" in compose["volumes"]
    for name, entry in compose["services"].items():
        if name.startswith(("airflow-", "spark-")):
            assert "workspace:/workspace" in entry["volumes"], name
            assert entry.get("environment", {}).get("AL_WORKSPACE", "/workspace") == "/workspace"


def test_every_long_running_service_has_a_health_check(compose):
    for service in spec.SERVICES:
        entry = compose["services"][service.name]
        assert ("healthcheck" in entry) == (not service.one_shot), service.name


def test_secrets_come_from_env_and_env_example_names_them(compose):
    text = COMPOSE_FILE.read_text()
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)\}", text))  # $${X}: a shell variable
    assert referenced <= set(spec.SECRET_NAMES)
    example = (REPO_ROOT / ".env.example").read_text()
    names = {line.split("=", 1)[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    assert names == set(spec.SECRET_NAMES)


def test_the_local_stack_binds_loopback_only(tmp_path):
    placement = spec.local_placement(str(tmp_path), repo=str(REPO_ROOT), python="python")
    for service in spec.SERVICES:
        argv = spec.command(service, placement)
        assert "0.0.0.0" not in " ".join(argv), service.name
        env = spec.environment(service, placement, {})
        assert "0.0.0.0" not in " ".join(env.values()), service.name
