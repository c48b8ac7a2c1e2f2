"""docker-compose.yaml, generated from :mod:`devstack.stack_spec` (``python -m devstack.stack compose``).

The containers run the same commands with the same environment variable names as the
no-Docker stack; only the placement differs (service names as hosts, servers listening
inside the compose network, folders in named volumes). Secrets come from one ``.env``
(names in ``.env.example``). ``tests/unit/test_compose.py`` checks the committed file.
"""

from __future__ import annotations

from typing import Any

from devstack import stack_spec as spec

#: This project's image: Airflow 3.3.2 with a JVM (Spark) and the pinned requirements.
AIRFLOW_IMAGE = "airflow-active-learning:local"
DOCKERFILE = """\
FROM apache/airflow:3.3.2-python3.11
USER root
# Spark (featurize, query, SparkTrials, the standalone master and worker) needs a JVM.
RUN apt-get update \\
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \\
 && rm -rf /var/lib/apt/lists/*
USER airflow
COPY requirements.txt constraints.txt /tmp/al/
RUN pip install --no-cache-dir -r /tmp/al/requirements.txt -c /tmp/al/constraints.txt
"""
#: Variables only the containers need (the no-Docker runner gets them from devstack.airflow_local).
COMPOSE_ONLY_ENV = {
    "AIRFLOW__CORE__DAGS_FOLDER": "/opt/al/dags",
    "AIRFLOW__CORE__PLUGINS_FOLDER": "/opt/al/plugins",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": "/opt/airflow/auth/passwords.json",
    "AIRFLOW__API__BASE_URL": "http://127.0.0.1:8080",
    "AIRFLOW__API__WORKERS": "1",
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": "/opt/airflow/logs",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "SPARK_NO_DAEMONIZE": "1",
}
#: Named volumes: data of the servers, the shared workspace, Airflow's task logs and auth file.
VOLUMES = ("postgres-data", "seaweedfs-data", "workspace", "airflow-logs", "airflow-auth")


def _mounts(service: spec.Service) -> list[str]:
    if service.name == "postgres":
        return ["postgres-data:/var/lib/postgresql/data"]
    if service.name == "redis":
        return []
    if service.name == "seaweedfs":
        return ["seaweedfs-data:/data"]
    # The code (read-only) and the shared workspace: every task and Spark executor sees one path.
    mounts = [".:/opt/al:ro", "workspace:/workspace"]
    if service.name.startswith("airflow-"):
        mounts += ["airflow-logs:/opt/airflow/logs", "airflow-auth:/opt/airflow/auth"]
    return mounts


def _healthcheck(service: spec.Service, placement: spec.Placement) -> dict[str, Any] | None:
    health = service.health
    if health is None:
        return None
    if health.kind == "http":
        test = [
            "CMD",
            "curl",
            "--fail",
            "-s",
            f"http://localhost:{placement.port(service.name, health.port)}{health.path}",
        ]
    elif health.kind == "tcp":
        port = placement.port(service.name, health.port)
        test = {
            "postgres": ["CMD", "pg_isready", "-U", "postgres"],
            "redis": ["CMD", "redis-cli", "ping"],
        }.get(service.name, ["CMD-SHELL", f"nc -z 127.0.0.1 {port}"])
    elif health.kind == "celery":
        name = service.command[service.command.index("--celery-hostname") + 1].split("@")[0]
        test = [
            "CMD-SHELL",
            "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping "
            f'-d "{name}@$${{HOSTNAME}}"',
        ]
    else:  # an Airflow job that heartbeats
        test = ["CMD-SHELL", f'airflow jobs check --job-type {health.path} --hostname "$${{HOSTNAME}}"']
    return {"test": test, "interval": "30s", "timeout": "10s", "retries": 5, "start_period": "30s"}


def _environment(service: spec.Service, placement: spec.Placement) -> dict[str, str]:
    secrets = {name: "${" + name + "}" for name in spec.SECRET_NAMES}
    env = spec.environment(service, placement, secrets)
    if service.name.startswith("airflow-"):
        env.update(COMPOSE_ONLY_ENV)
    elif service.name.startswith("spark-"):
        env["SPARK_NO_DAEMONIZE"] = "1"
    return env


def compose_service(service: spec.Service, placement: spec.Placement) -> dict[str, Any]:
    entry: dict[str, Any] = {}
    if service.image == "airflow":
        entry["image"] = AIRFLOW_IMAGE
        if service.name == "airflow-init":
            entry["build"] = {"context": ".", "dockerfile_inline": DOCKERFILE}
    else:
        entry["image"] = service.image
    argv = spec.command(service, placement)
    if not service.external:
        # The image's own entrypoint is bypassed: the same argv as the no-Docker stack.
        entry["entrypoint"] = [argv[0]]
        entry["command"] = argv[1:]
    env = _environment(service, placement)
    if env:
        entry["environment"] = env
    if service.publish:
        entry["ports"] = [f"127.0.0.1:{service.ports[p]}:{service.ports[p]}" for p in service.publish]
    mounts = _mounts(service)
    if service.name == "postgres":
        entry["configs"] = [{"source": "postgres-init", "target": "/docker-entrypoint-initdb.d/al-databases.sql"}]
    if mounts:
        entry["volumes"] = mounts
    health = _healthcheck(service, placement)
    if health:
        entry["healthcheck"] = health
    if service.depends_on:
        entry["depends_on"] = {
            name: {"condition": "service_completed_successfully" if spec.service(name).one_shot else "service_healthy"}
            for name in service.depends_on
        }
    if service.queues:
        entry["labels"] = {"al.queues": ",".join(service.queues)}
    entry["restart"] = "no" if service.one_shot else "unless-stopped"
    return entry


def compose_document() -> dict[str, Any]:
    placement = spec.compose_placement()
    databases = "\n".join(f"CREATE DATABASE {placement.database(p)};" for p in spec.DATABASES)
    return {
        "name": "airflow-active-learning",
        "services": {service.name: compose_service(service, placement) for service in spec.SERVICES},
        "volumes": {name: {} for name in VOLUMES},
        "configs": {"postgres-init": {"content": databases + "\n"}},
    }


HEADER = """\
# GENERATED from devstack/stack_spec.py by `python -m devstack.stack compose > docker-compose.yaml`;
# do not edit by hand (tests/unit/test_compose.py checks it against the spec).
#
# The team deployment in containers (docs/deploy.md):
#   cp .env.example .env   # fill in the secrets
#   docker compose up -d --build
#   docker compose up -d --scale airflow-worker=3     # more workers on the default queue
# Airflow UI http://127.0.0.1:8080 (user admin; password:
#   docker compose exec airflow-api-server cat /opt/airflow/auth/passwords.json)
# Published ports are bound to 127.0.0.1; inside the compose network servers listen on
# every interface. Not exercised by the test suite (no container engine on CI machines);
# the no-Docker stack (make stack) runs the same commands and is tested end to end.

"""


def render_compose() -> str:
    import yaml

    return HEADER + yaml.safe_dump(compose_document(), sort_keys=False, width=120)
