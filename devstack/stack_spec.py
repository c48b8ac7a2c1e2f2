"""The team deployment's services, defined once: the no-Docker stack and docker-compose.yaml.

Each :class:`Service` names its command (argv templates), ports, environment variable
names, Celery queues and health check. :func:`command` and :func:`environment` render
them for a :class:`Placement`: the no-Docker stack (``devstack.stack``: every service on
127.0.0.1, paths in the state folder) or the containers of docker-compose.yaml
(``python -m devstack.stack compose``: service names as hosts, paths in volumes). So
both run the same commands with the same variables; ``tests/unit/test_compose.py``
checks the committed docker-compose.yaml against this module.

PostgreSQL and Redis are services of the compose file only; without Docker they already
run on the machine (``external``), and the stack only creates its databases there.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

#: Databases of the stack in PostgreSQL: ``<prefix>_<purpose>``.
DATABASES = ("airflow", "mlflow", "labels")
#: The buckets SeaweedFS creates: labelling (query sets, labelled files) and MLflow artifacts.
LABELLING_BUCKET = "labelling"
ARTIFACTS_BUCKET = "mlflow-artifacts"
#: Queue of the Spark-heavy tasks (featurize, tune, query, daily scoring): LoopConfig.spark_queue.
SPARK_QUEUE = "spark"
DEFAULT_QUEUE = "default"

#: Secrets: generated on first start into <state>/credentials.env unless set in the environment.
SECRET_NAMES = (
    "AIRFLOW_ADMIN_PASSWORD",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AL_S3_ACCESS_KEY",
    "AL_S3_SECRET_KEY",
    "POSTGRES_PASSWORD",
)


@dataclass(frozen=True)
class Health:
    """How to tell a service is up: ``http`` (GET ``path`` on port ``port`` answers 2xx),
    ``tcp`` (the port accepts connections) or ``celery`` (the worker answers a ping).
    """

    kind: str
    port: str = ""
    path: str = ""


@dataclass(frozen=True)
class Service:
    """One component. ``command`` items are ``str.format`` templates over the placement
    (``{bind}``, ``{host[<service>]}``, ``{port[<service>][<name>]}``, ``{path[<name>]}``,
    ``{db[<purpose>]}``, ``{hostname}``, ``{buckets}``); the first item is a program name
    resolved per placement (venv binary or the container's PATH).
    """

    name: str
    command: tuple[str, ...]
    ports: Mapping[str, int] = field(default_factory=dict)
    env: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    health: Health | None = None
    depends_on: tuple[str, ...] = ()
    #: Already runs on development and CI machines; the no-Docker stack does not start it.
    external: bool = False
    #: Runs to completion before the servers start (``airflow db migrate``).
    one_shot: bool = False
    #: Compose image: "airflow" (this project's), or a public one.
    image: str = "airflow"
    #: ``docker compose up --scale <name>=N`` makes sense.
    scalable: bool = False
    #: Ports docker-compose.yaml publishes on the host (always on 127.0.0.1).
    publish: tuple[str, ...] = ()


# --- environment variable names, grouped by who needs them --------------------------------------
AIRFLOW_ENV = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__API__EXPOSE_CONFIG",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    "AIRFLOW_CONN_AL_S3",
    "AL_WORKSPACE",
    "AL_BUCKET",
    "AL_S3_ENDPOINT_URL",
    "AL_MLFLOW_TRACKING_URI",
    "AL_LABEL_STORE_URL",
    "AL_SPARK_MASTER",
    "AL_SPARK_QUEUE",
    "AL_USE_SPARK_TRIALS",
    "AL_SPARK_DRIVER_MEMORY",
    "PYSPARK_PYTHON",
    "PYTHONPATH",
)
WORKER_ENV = (*AIRFLOW_ENV, "AL_STACK_HOSTNAME")
SPARK_ENV = ("SPARK_LOCAL_IP", "SPARK_MASTER_OPTS", "PYSPARK_PYTHON", "PYTHONPATH", "SPARK_WORKER_DIR")
MLFLOW_ENV = (
    "MLFLOW_S3_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
)
SEAWEEDFS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class WorkerRole:
    """A Celery worker of the no-Docker stack (compose: a service per role)."""

    service: str
    celery_name: str
    queues: tuple[str, ...]
    concurrency: int


#: One worker for the light tasks; one, next to the Spark cluster, for the Spark-heavy ones
#: (one at a time: each holds the cluster's cores). Light tasks never wait behind a Spark job.
WORKERS = (
    WorkerRole("airflow-worker", "worker-default", (DEFAULT_QUEUE,), 2),
    WorkerRole("airflow-worker-spark", "worker-spark", (SPARK_QUEUE,), 1),
)


def worker_service(role: WorkerRole) -> Service:
    return Service(
        name=role.service,
        command=(
            "airflow",
            "celery",
            "worker",
            "--celery-hostname",
            f"{role.celery_name}@{{hostname}}",
            "--queues",
            ",".join(role.queues),
            "--concurrency",
            str(role.concurrency),
            # Task logs are on the shared log folder/volume; the log server would bind 0.0.0.0.
            "--skip-serve-logs",
        ),
        env=WORKER_ENV,
        queues=role.queues,
        health=Health("celery"),
        depends_on=("airflow-init", "redis", "postgres"),
        scalable=role.queues == (DEFAULT_QUEUE,),
    )


SERVICES: tuple[Service, ...] = (
    Service(
        "postgres",
        ("postgres",),
        ports={"sql": 5432},
        env=("POSTGRES_USER", "POSTGRES_PASSWORD"),
        health=Health("tcp", "sql"),
        external=True,
        image="postgres:16",
    ),
    Service(
        "redis",
        ("redis-server",),
        ports={"redis": 6379},
        health=Health("tcp", "redis"),
        external=True,
        image="redis:7.2",
    ),
    Service(
        "seaweedfs",
        (
            "weed",
            "mini",
            "-ip={host[seaweedfs]}",
            "-ip.bind={bind}",
            "-dir={path[seaweedfs]}",
            "-bucket={buckets}",
            "-s3.port={port[seaweedfs][s3]}",
            "-master.telemetry=false",
        ),
        ports={"s3": 8333},
        publish=("s3",),
        env=SEAWEEDFS_ENV,
        health=Health("tcp", "s3"),
        image="chrislusf/seaweedfs:4.48",
    ),
    Service(
        "mlflow",
        (
            "mlflow",
            "server",
            "--host",
            "{bind}",
            "--port",
            "{port[mlflow][http]}",
            "--workers",
            "1",
            "--backend-store-uri",
            "{db_url[mlflow]}",
            "--artifacts-destination",
            f"s3://{ARTIFACTS_BUCKET}/",
            "--serve-artifacts",
            "--allowed-hosts",
            "{allowed_hosts}",
        ),
        ports={"http": 5000},
        publish=("http",),
        env=MLFLOW_ENV,
        health=Health("http", "http", "/health"),
        depends_on=("postgres", "seaweedfs"),
    ),
    Service(
        "spark-master",
        (
            "spark-class",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "{host[spark-master]}",
            "--port",
            "{port[spark-master][rpc]}",
            "--webui-port",
            "{port[spark-master][webui]}",
        ),
        ports={"rpc": 7077, "webui": 8090},
        publish=("webui",),
        env=SPARK_ENV,
        health=Health("http", "webui", "/json/"),
    ),
    Service(
        "spark-worker",
        (
            "spark-class",
            "org.apache.spark.deploy.worker.Worker",
            "spark://{host[spark-master]}:{port[spark-master][rpc]}",
            "--host",
            "{host[spark-worker]}",
            "--port",
            "{port[spark-worker][rpc]}",
            "--webui-port",
            "{port[spark-worker][webui]}",
            "--cores",
            "2",
            "--memory",
            "2g",
        ),
        ports={"rpc": 7078, "webui": 8091},
        env=SPARK_ENV,
        health=Health("http", "webui", "/json/"),
        depends_on=("spark-master",),
    ),
    Service(
        "airflow-init",
        ("airflow", "db", "migrate"),
        env=AIRFLOW_ENV,
        depends_on=("postgres", "redis"),
        one_shot=True,
    ),
    Service(
        "airflow-api-server",
        ("airflow", "api-server", "--host", "{bind}", "--port", "{port[airflow-api-server][http]}", "--workers", "1"),
        ports={"http": 8080},
        publish=("http",),
        env=AIRFLOW_ENV,
        health=Health("http", "http", "/api/v2/monitor/health"),
        depends_on=("airflow-init",),
    ),
    Service(
        "airflow-scheduler",
        ("airflow", "scheduler", "--skip-serve-logs"),
        ports={"health": 8974},
        env=AIRFLOW_ENV,
        health=Health("http", "health", "/health"),
        depends_on=("airflow-init",),
    ),
    Service(
        "airflow-dag-processor",
        ("airflow", "dag-processor"),
        env=AIRFLOW_ENV,
        health=Health("job", "", "DagProcessorJob"),
        depends_on=("airflow-init",),
    ),
    Service(
        "airflow-triggerer",
        ("airflow", "triggerer", "--skip-serve-logs"),
        env=AIRFLOW_ENV,
        health=Health("job", "", "TriggererJob"),
        depends_on=("airflow-init",),
    ),
    *(worker_service(role) for role in WORKERS),
)

SERVICE_NAMES = tuple(s.name for s in SERVICES)


def service(name: str) -> Service:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no service {name!r}; services: {', '.join(SERVICE_NAMES)}")


# --- placements ---------------------------------------------------------------------------------
@dataclass
class Placement:
    """Where the services run and how they reach each other.

    ``hosts``: the address of each service for the others; ``bind``: the address servers
    listen on; ``ports``: service -> port name -> port; ``paths``: named folders
    (``workspace``, ``logs``, ``airflow_home``, ``seaweedfs``, ``spark_work``, ``repo``);
    ``db_prefix``: databases ``<prefix>_airflow`` etc.; ``redis_db``: the broker's
    Redis database number; ``hostname``: the worker machine's name (Celery ``%h`` in
    containers); ``python``: the interpreter of tasks and Spark executors.
    """

    hosts: dict[str, str]
    bind: str
    ports: dict[str, dict[str, int]]
    paths: dict[str, str]
    db_prefix: str = "al_stack"
    redis_db: int = 0
    hostname: str = field(default_factory=socket.gethostname)
    python: str = "python"
    #: The program name -> executable (venv binaries); unknown names run as given.
    programs: dict[str, str] = field(default_factory=dict)

    def host(self, name: str) -> str:
        return self.hosts.get(name, self.hosts.get("*", "127.0.0.1"))

    def port(self, name: str, port_name: str) -> int:
        return self.ports.get(name, {}).get(port_name, service(name).ports[port_name])

    def database(self, purpose: str) -> str:
        return f"{self.db_prefix}_{purpose}"

    def postgres_url(self, purpose: str, secrets: Mapping[str, str], driver: str = "postgresql+psycopg2") -> str:
        password = secrets.get("POSTGRES_PASSWORD", "")
        user = "postgres" + (f":{password}" if password else "")
        return f"{driver}://{user}@{self.host('postgres')}:{self.port('postgres', 'sql')}/{self.database(purpose)}"


def local_placement(
    state_dir: str, ports: Mapping[str, Mapping[str, int]] | None = None, *, repo: str, python: str, **kwargs
) -> Placement:
    """Every service on 127.0.0.1; folders under ``state_dir``."""
    return Placement(
        hosts={"*": "127.0.0.1"},
        bind="127.0.0.1",
        ports={name: dict(p) for name, p in (ports or {}).items()},
        paths=_paths(state_dir, repo),
        python=python,
        **kwargs,
    )


def compose_placement() -> Placement:
    """Containers: each service reachable by its compose name; servers listen on every
    interface inside the network (published ports are bound to 127.0.0.1 on the host).
    """
    return Placement(
        hosts={name: name for name in SERVICE_NAMES},
        bind="0.0.0.0",  # inside the container network only
        ports={},
        paths={
            "repo": "/opt/al",
            "workspace": "/workspace",
            "logs": "/opt/airflow/logs",
            "airflow_home": "/opt/airflow",
            "seaweedfs": "/data",
            "spark_work": "/tmp/spark-work",
        },
        hostname="%h",
        python="python",
    )


def _paths(state_dir: str, repo: str) -> dict[str, str]:
    state = os.path.abspath(state_dir)
    return {
        "repo": repo,
        "workspace": os.path.join(state, "workspace"),
        "logs": os.path.join(state, "logs"),
        "airflow_home": os.path.join(state, "airflow_home"),
        "seaweedfs": os.path.join(state, "seaweedfs"),
        "spark_work": os.path.join(state, "spark-work"),
    }


def command(spec: Service, placement: Placement) -> list[str]:
    """The argv of ``spec`` in ``placement``."""
    values = {
        "bind": placement.bind,
        "host": _AnyKey(placement.host),
        "port": _AnyKey(lambda name: _AnyKey(lambda port_name: placement.port(name, port_name))),
        "path": placement.paths,
        "db": _AnyKey(placement.database),
        "db_url": _AnyKey(lambda purpose: placement.postgres_url(purpose, _SECRET_REFS)),
        "hostname": placement.hostname,
        "buckets": f"{LABELLING_BUCKET},{ARTIFACTS_BUCKET}",
        "allowed_hosts": f"{placement.host('mlflow')},{placement.host('mlflow')}:{placement.port('mlflow', 'http')}"
        + (",localhost,127.0.0.1" if placement.host("mlflow") != "127.0.0.1" else ",localhost"),
    }
    argv = [item.format(**values) for item in spec.command]
    argv[0] = placement.programs.get(argv[0], argv[0])
    return argv


class _AnyKey:
    """``{x[key]}`` in a format template calls ``function(key)``."""

    def __init__(self, function) -> None:
        self.function = function

    def __getitem__(self, key: str):
        return self.function(key)


class _SecretRefs(dict):
    """Secrets as ``${NAME}`` references (compose interpolates them from ``.env``)."""

    def get(self, key, default=None):
        return "${" + key + "}"


_SECRET_REFS = _SecretRefs()


def environment(spec: Service, placement: Placement, secrets: Mapping[str, str]) -> dict[str, str]:
    """The values of ``spec.env`` in ``placement`` (secrets from ``secrets``)."""
    values = _all_values(placement, secrets)
    # Spark daemons bind and advertise their own address (container name or 127.0.0.1).
    values["SPARK_LOCAL_IP"] = placement.host(spec.name)
    return {name: values[name] for name in spec.env}


def _all_values(p: Placement, secrets: Mapping[str, str]) -> dict[str, str]:
    """Every environment variable any service needs, by name."""
    import json

    api = f"http://{p.host('airflow-api-server')}:{p.port('airflow-api-server', 'http')}"
    s3_endpoint = f"http://{p.host('seaweedfs')}:{p.port('seaweedfs', 's3')}"
    broker = f"redis://{p.host('redis')}:{p.port('redis', 'redis')}/{p.redis_db}"
    s3_conn = {
        "conn_type": "aws",
        "login": secrets.get("AL_S3_ACCESS_KEY", ""),
        "password": secrets.get("AL_S3_SECRET_KEY", ""),
        "extra": {
            "endpoint_url": s3_endpoint,
            "region_name": "us-east-1",
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        },
    }
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": p.postgres_url("airflow", secrets),
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + p.postgres_url("airflow", secrets, "postgresql"),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CORE__FERNET_KEY": secrets.get("AIRFLOW__CORE__FERNET_KEY", ""),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.get("AIRFLOW__API_AUTH__JWT_SECRET", ""),
        "AIRFLOW__API__SECRET_KEY": secrets.get("AIRFLOW__API__SECRET_KEY", ""),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        # Task instances record the worker's name (AL_STACK_HOSTNAME), not the machine's.
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "devstack.stack_spec.worker_hostname",
        # A worker lost with its tasks is noticed after this long, and the task retried.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
        # Operators can read the deployment's settings (never the secrets) in the UI and API.
        "AIRFLOW__API__EXPOSE_CONFIG": "non-sensitive-only",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": p.bind,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(p.port("airflow-scheduler", "health")),
        "AIRFLOW_CONN_AL_S3": json.dumps(s3_conn),
        "AL_WORKSPACE": p.paths["workspace"],
        "AL_BUCKET": LABELLING_BUCKET,
        "AL_S3_ENDPOINT_URL": s3_endpoint,
        "AL_MLFLOW_TRACKING_URI": f"http://{p.host('mlflow')}:{p.port('mlflow', 'http')}",
        "AL_LABEL_STORE_URL": p.postgres_url("labels", secrets),
        "AL_SPARK_MASTER": f"spark://{p.host('spark-master')}:{p.port('spark-master', 'rpc')}",
        "AL_SPARK_QUEUE": SPARK_QUEUE,
        "AL_USE_SPARK_TRIALS": "true",
        "AL_SPARK_DRIVER_MEMORY": "1g",
        "AL_STACK_HOSTNAME": "",
        "PYSPARK_PYTHON": p.python,
        "PYTHONPATH": p.paths["repo"],
        "SPARK_WORKER_DIR": p.paths["spark_work"],
        # The master's REST submission server would hold a fixed port (6066); jobs come from drivers.
        "SPARK_MASTER_OPTS": "-Dspark.master.rest.enabled=false",
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        # The server's job runner (huey consumers, for GenAI features) is not used here;
        # it would more than double the server's memory.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "AWS_ACCESS_KEY_ID": secrets.get("AL_S3_ACCESS_KEY", ""),
        "AWS_SECRET_ACCESS_KEY": secrets.get("AL_S3_SECRET_KEY", ""),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": secrets.get("POSTGRES_PASSWORD", ""),
    }


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack: the worker's own name (``AL_STACK_HOSTNAME``),
    so two workers on one machine are told apart in task instances; else the FQDN.
    """
    return os.environ.get("AL_STACK_HOSTNAME") or socket.getfqdn()
