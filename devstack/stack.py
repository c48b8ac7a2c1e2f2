"""The team deployment without Docker: ``python -m devstack.stack up|down|status|compose``.

    make stack          # = python -m devstack.stack up      (state in .stack/)
    make stack-status   # what runs where: pid, ports, alive
    make stack-down     # stops every process of the stack, verifies no port is left
    python -m devstack.stack compose > docker-compose.yaml

Starts, all on 127.0.0.1, the services of :mod:`devstack.stack_spec`: SeaweedFS (the
labelling and MLflow artifact buckets, credentials enforced), the MLflow tracking server
(PostgreSQL backend store, artifacts proxied to S3), a Spark standalone master and
worker, and Airflow 3 with the CeleryExecutor (api-server, scheduler, dag-processor,
triggerer, two Celery workers). PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379)
already run; the stack creates its databases ``<prefix>_airflow``, ``_mlflow`` and
``_labels`` there when missing (it never drops any).

State folder (default ``.stack/``, ``--dir`` or ``AL_STACK_DIR``): ``credentials.env``
(0600; secrets generated on first start, or taken from the environment),
``state.json`` (pids, ports), ``logs/`` (every component's log), ``workspace/`` (the
shared workspace), ``airflow_home/``, ``seaweedfs/``, ``spark-work/``.

Every process is started in its own process group and carries ``AL_STACK_DIR`` in its
environment, so ``down`` stops each group and then any straggler that still carries
the marker (Spark executors, task processes).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from al_tasks.config import REPO_ROOT
from devstack import stack_spec as spec
from devstack.airflow_local import (
    AirflowSettings,
    S3Settings,
    airflow_binary,
    airflow_environment,
    prepare_airflow_home,
    run_airflow,
)
from devstack.processes import HOST, ManagedProcess, port_in_use, say, start_process, venv_binary

DEFAULT_DIR = REPO_ROOT / ".stack"
MARKER = "AL_STACK_DIR"
#: Order of start; ``down`` goes the other way.
START_ORDER = (
    "seaweedfs",
    "mlflow",
    "spark-master",
    "spark-worker",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    *(role.service for role in spec.WORKERS),
)


class StackError(RuntimeError):
    """A service of the stack did not start or stop (the message carries its log tail)."""


# --- credentials ----------------------------------------------------------------------------------
def _generate(name: str) -> str:
    if name == "AIRFLOW__CORE__FERNET_KEY":
        from cryptography.fernet import Fernet

        return Fernet.generate_key().decode()
    if name == "POSTGRES_PASSWORD":
        return ""  # the machine's PostgreSQL uses trust auth; compose sets one in .env
    if name == "AL_S3_ACCESS_KEY":
        return "stack-" + secrets.token_hex(6)
    return secrets.token_urlsafe(24)


def load_credentials(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The stack's secrets: the environment's value, else the file's, else a new one
    (written to ``path`` with mode 0600).
    """
    stored: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith("#"):
                key, value = line.split("=", 1)
                stored[key.strip()] = value.strip()
    values = {name: environ.get(name) or stored.get(name) or _generate(name) for name in spec.SECRET_NAMES}
    if values != stored:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("# Secrets of the no-Docker stack (generated; never commit). Names: .env.example\n")
            out.writelines(f"{name}={values[name]}\n" for name in spec.SECRET_NAMES)
    path.chmod(0o600)
    return values


# --- PostgreSQL -----------------------------------------------------------------------------------
def create_databases(placement: spec.Placement, credentials: Mapping[str, str], fresh: bool = False) -> list[str]:
    """Create the stack's databases if missing (``fresh``: drop and recreate *these*)."""
    import psycopg2

    admin = placement.postgres_url("airflow", credentials, "postgresql").rsplit("/", 1)[0] + "/postgres"
    created = []
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for purpose in spec.DATABASES:
                name = placement.database(purpose)
                if fresh:
                    cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        connection.close()
    return created


# --- the stack ------------------------------------------------------------------------------------
@dataclass
class Stack:
    """The no-Docker stack in ``state_dir``.

    ``ports``: service -> port name -> port (others: stack_spec defaults);
    ``db_prefix``, ``redis_db``: where its metadata and broker live;
    ``base_env``: the environment the processes start from (default ``os.environ``).
    """

    state_dir: Path = DEFAULT_DIR
    ports: dict[str, dict[str, int]] = field(default_factory=dict)
    db_prefix: str = "al_stack"
    redis_db: int = 0
    base_env: dict[str, str] | None = None
    #: The one switch to a single machine without Celery: "LocalExecutor" (same PostgreSQL
    #: metadata; the scheduler runs the tasks, no Celery worker is started).
    executor: str = "CeleryExecutor"
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).resolve()
        self.logs = self.state_dir / "logs"
        self.state_file = self.state_dir / "state.json"
        if self.state_file.exists() and not self.ports:
            saved = json.loads(self.state_file.read_text())
            self.ports = saved.get("ports", {})
            self.db_prefix = saved.get("db_prefix", self.db_prefix)
            self.redis_db = saved.get("redis_db", self.redis_db)
        self.placement = spec.local_placement(
            str(self.state_dir),
            self.ports,
            repo=str(REPO_ROOT),
            python=sys.executable,
            db_prefix=self.db_prefix,
            redis_db=self.redis_db,
            programs={
                "airflow": str(airflow_binary()),
                "mlflow": str(venv_binary("mlflow")),
                "spark-class": str(Path(spark_home()) / "bin" / "spark-class"),
            },
        )
        self.credentials: dict[str, str] = {}

    # -- environment ----------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.placement.port('airflow-api-server', 'http')}"

    def airflow_settings(self) -> AirflowSettings:
        paths = self.placement.paths
        return AirflowSettings(
            home=Path(paths["airflow_home"]),
            api_port=self.placement.port("airflow-api-server", "http"),
            s3=S3Settings(
                f"http://{HOST}:{self.placement.port('seaweedfs', 's3')}",
                self.credentials["AL_S3_ACCESS_KEY"],
                self.credentials["AL_S3_SECRET_KEY"],
            ),
            admin_password=self.credentials["AIRFLOW_ADMIN_PASSWORD"],
            parallelism=4,
        )

    def env_of(self, name: str) -> dict[str, str]:
        """The environment of service ``name``: the base, Airflow's local settings for
        Airflow components, then the spec's variables (and the stack marker).
        """
        base = dict(os.environ if self.base_env is None else self.base_env)
        service = spec.service(name)
        if name.startswith("airflow-"):
            settings = self.airflow_settings()
            base = airflow_environment(settings, base)
            base["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(self.logs / "airflow")
        base.update(spec.environment(service, self.placement, self.credentials))
        if name.startswith("airflow-"):
            base["AIRFLOW__CORE__EXECUTOR"] = self.executor
        if name.startswith("spark-"):
            base.update(SPARK_HOME=spark_home(), SPARK_LOG_DIR=str(self.logs), SPARK_NO_DAEMONIZE="1")
        for role in spec.WORKERS:
            if role.service == name:
                base["AL_STACK_HOSTNAME"] = role.celery_name
        base[MARKER] = str(self.state_dir)
        base.setdefault("NO_PROXY", "127.0.0.1,localhost")
        base["MLFLOW_ENABLE_TELEMETRY"] = "false"
        return base

    # -- up -------------------------------------------------------------------------------------
    def up(self, fresh_databases: bool = False, timeout: float = 240) -> Stack:
        """Start every service; refuses when this state folder's stack still runs."""
        running = [row["service"] for row in self.status() if row["alive"]] if not self.processes else []
        if running:
            raise StackError(
                f"the stack in {self.state_dir} is running ({', '.join(running)}): make stack-status / make stack-down"
            )
        if self.state_file.exists():
            self.state_file.unlink()  # a previous stack's pids must not be signalled by this one's down
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = load_credentials(self.state_dir / "credentials.env", self.base_env or os.environ)
        for external in ("postgres", "redis") if self.executor == "CeleryExecutor" else ("postgres",):
            port = self.placement.port(external, next(iter(spec.service(external).ports)))
            if not port_in_use(port):
                raise StackError(f"{external} does not answer on {HOST}:{port}; it must run before the stack starts")
        created = create_databases(self.placement, self.credentials, fresh=fresh_databases)
        if created:
            say(f"created databases {', '.join(created)}")
        prepare_airflow_home(self.airflow_settings(), self.base_env)  # folders, admin password file
        self._write_state()
        try:
            for name in self.services():
                self.start_service(name, timeout=timeout)
        except BaseException:
            self.down()
            raise
        return self

    def services(self) -> list[str]:
        """The services this stack starts, in order."""
        workers = {role.service for role in spec.WORKERS}
        return [n for n in START_ORDER if self.executor == "CeleryExecutor" or n not in workers]

    def start_service(self, name: str, timeout: float = 240) -> None:
        if name in self.processes and self.processes[name].is_running():
            return
        if name == "airflow-api-server":
            migrate_log = self.logs / "airflow-db-migrate.log"
            say("airflow db migrate")
            run_airflow(["db", "migrate"], self.env_of("airflow-init"), log_path=migrate_log, timeout=600)
        say(f"starting {name}")
        if name == "seaweedfs":
            self.processes[name] = self._start_seaweedfs(timeout)
        else:
            argv = spec.command(spec.service(name), self.placement)
            self.processes[name] = start_process(name, argv, self.env_of(name), self.logs / f"{name}.log")
        self._write_state()
        self.wait_healthy(name, timeout)

    def start_extra_worker(self, celery_name: str, queues: tuple[str, ...], concurrency: int = 1) -> ManagedProcess:
        """One more Celery worker (``celery_name``, serving ``queues``): scaling a queue."""
        role = spec.WorkerRole(f"airflow-worker-{celery_name}", celery_name, queues, concurrency)
        argv = spec.command(spec.worker_service(role), self.placement)
        env = self.env_of(spec.WORKERS[0].service)
        env["AL_STACK_HOSTNAME"] = celery_name
        process = start_process(role.service, argv, env, self.logs / f"{role.service}.log")
        self.processes[role.service] = process
        self._write_state()
        return process

    def _start_seaweedfs(self, timeout: float) -> ManagedProcess:
        from devstack.seaweedfs import start_seaweedfs

        os.environ[MARKER] = str(self.state_dir)  # start_seaweedfs passes os.environ on
        try:
            server = start_seaweedfs(
                self.placement.paths["seaweedfs"],
                bucket=f"{spec.LABELLING_BUCKET},{spec.ARTIFACTS_BUCKET}",
                access_key=self.credentials["AL_S3_ACCESS_KEY"],
                secret_key=self.credentials["AL_S3_SECRET_KEY"],
                s3_port=self.placement.port("seaweedfs", "s3"),
                log_path=self.logs / "seaweedfs.log",
                timeout=timeout,
            )
        finally:
            os.environ.pop(MARKER, None)
        atexit.unregister(server.stop)  # the stack outlives this command
        self.seaweedfs_ports = server.ports
        return ManagedProcess("seaweedfs", server.process, server.log_path)

    def wait_healthy(self, name: str, timeout: float) -> None:
        """Until ``name``'s health check passes (raises StackError with its log tail)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes[name]
            if not process.is_running():
                raise StackError(
                    f"{name} exited ({process.process.returncode}); log {process.log_path}:\n{process.log_tail()}"
                )
            if self.is_healthy(name):
                return
            time.sleep(1)
        raise StackError(f"{name} not healthy within {timeout:.0f} s; log:\n{self.processes[name].log_tail()}")

    def is_healthy(self, name: str) -> bool:
        import requests

        health = spec.service(name).health
        if health is None or health.kind in ("celery", "job"):
            return True  # alive is all the runner checks (the compose health checks ask Airflow)
        port = self.placement.port(name, health.port)
        if health.kind == "tcp":
            return port_in_use(port)
        try:
            return requests.get(f"http://{HOST}:{port}{health.path}", timeout=3).ok
        except requests.RequestException:
            return False

    def _write_state(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        services = {}
        for name, process in self.processes.items():
            ports = dict(spec.service(name).ports) if name in spec.SERVICE_NAMES else {}
            ports = {p: self.placement.port(name, p) for p in ports}
            if name == "seaweedfs":
                ports.update(getattr(self, "seaweedfs_ports", {}))
            services[name] = {
                "pid": process.process.pid,
                "started": _create_time(process.process.pid),
                "ports": ports,
                "log": str(process.log_path),
            }
        previous = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        merged = {**previous.get("services", {}), **services}
        state = {
            "ports": self.ports,
            "db_prefix": self.db_prefix,
            "redis_db": self.redis_db,
            "services": merged,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    # -- status and down ------------------------------------------------------------------------
    def status(self) -> list[dict]:
        """One row per service: name, pid, alive, ports (listening or not), log."""

        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"services": {}}
        rows = []
        for name, info in state["services"].items():
            alive = _is_ours(info)
            ports = {f"{p}:{port}": port_in_use(port) for p, port in info["ports"].items() if port}
            rows.append(
                {
                    "service": name,
                    "pid": info["pid"],
                    "alive": alive,
                    "ports": ports,
                    "rss_mb": _group_rss_mb(info["pid"]) if alive else 0,
                    "log": info["log"],
                }
            )
        return rows

    def memory_mb(self) -> dict[str, int]:
        """Resident memory of each service's process group (with its tasks and JVMs), MB."""
        import psutil

        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"services": {}}
        by_group = {info["pid"]: name for name, info in state["services"].items()}
        totals = dict.fromkeys(by_group.values(), 0)
        for proc in psutil.process_iter():
            try:
                name = by_group.get(os.getpgid(proc.pid))
                if name is not None:
                    totals[name] += proc.memory_info().rss
            except (psutil.Error, ProcessLookupError):
                continue
        return {name: total // 2**20 for name, total in totals.items()}

    def stop_service(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop ``name``'s process group (``SIGKILL``: at once, as a lost machine)."""
        from devstack.processes import signal_group

        process = self.processes.get(name)
        if process is None:
            return
        if sig == signal.SIGKILL:
            members = process.group_members()
            signal_group(process.process.pid, signal.SIGKILL)
            for proc in members:
                try:
                    proc.kill()
                except Exception:
                    pass
            process.process.wait(timeout=10)
        else:
            process.stop()

    def down(self) -> list[str]:
        """Stop every process of this stack; returns what had to be killed late."""
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"services": {}}
        order = [n for n in reversed(START_ORDER) if n in state["services"]]
        order = [n for n in state["services"] if n not in order] + order
        groups = {info["pid"] for info in state["services"].values()}
        _stop_groups([state["services"][name] for name in order])
        leftovers = _kill_marked(self.state_dir, groups)
        for port in {p for info in state["services"].values() for p in info["ports"].values() if p}:
            for _ in range(40):
                if not port_in_use(port):
                    break
                time.sleep(0.25)
        self.processes.clear()
        for stale in Path("/tmp").glob("seaweedfs-*.sock"):
            if any(str(p) in stale.name for info in state["services"].values() for p in info["ports"].values()):
                stale.unlink(missing_ok=True)
        return leftovers

    def leftovers(self) -> tuple[list[int], list[int]]:
        """(pids still carrying this stack's marker, stack ports still accepting connections)."""
        state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"services": {}}
        ports = sorted({p for info in state["services"].values() for p in info["ports"].values() if p})
        groups = {info["pid"] for info in state["services"].values()}
        return _marked_pids(self.state_dir, groups), [p for p in ports if port_in_use(p)]


def _group_rss_mb(pgid: int) -> int:
    """Resident memory of the whole process group ``pgid`` (the component, its task
    processes and JVMs), in MB.
    """
    import psutil

    total = 0
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                total += proc.memory_info().rss
        except (psutil.Error, ProcessLookupError):
            continue
    return total // 2**20


def _create_time(pid: int) -> float | None:
    """Start time of the live process ``pid``; None if it is gone or a zombie (exited,
    not yet reaped by the process that started it).
    """
    import psutil

    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.Error:
        return None


def _is_ours(info: Mapping) -> bool:
    """The recorded group leader still runs (same pid *and* start time: not a reused pid)."""
    started = _create_time(info["pid"])
    return started is not None and (info.get("started") is None or abs(started - info["started"]) < 0.01)


def _stop_groups(infos: list[Mapping], timeout: float = 15) -> None:
    """SIGTERM to every group led by ``info['pid']`` that is still ours (in the given
    order, without waiting in between), then SIGKILL to those left after ``timeout``.
    """
    from devstack.processes import signal_group

    live = [info for info in infos if _is_ours(info)]
    for info in live:
        signal_group(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_is_ours(info) for info in live):
        time.sleep(0.25)
    for info in live:
        if _is_ours(info):
            signal_group(info["pid"], signal.SIGKILL)


def _marked_pids(state_dir: Path, groups: set[int]) -> list[int]:
    """Processes of this stack: in one of its process ``groups``, or carrying its marker
    (components that set their process title overwrite their visible environment, so
    both are looked at).
    """
    import psutil

    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue  # exited; only its parent (or init) can reap it
            if os.getpgid(proc.pid) in groups or proc.environ().get(MARKER) == str(state_dir):
                found.append(proc.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def _kill_marked(state_dir: Path, groups: set[int]) -> list[str]:
    import psutil

    killed = []
    for pid in _marked_pids(state_dir, groups):
        try:
            proc = psutil.Process(pid)
            killed.append(f"{pid} {proc.name()}")
            proc.kill()
        except psutil.Error:
            continue
    return killed


def free_ports() -> dict[str, dict[str, int]]:
    """A free port for every port of the stack (for tests: never the defaults). Taken from
    SeaweedFS's range, so its gRPC twins (port + 10000) stay valid too.
    """
    import random

    from devstack.processes import port_is_free

    rng = random.SystemRandom()
    taken: set[int] = set()
    plan: dict[str, dict[str, int]] = {}
    for service in spec.SERVICES:
        if service.external:
            continue
        for name in service.ports:
            while True:
                port = rng.randint(11000, 22700)
                if port not in taken and port_is_free(port) and port_is_free(port + 10000):
                    break
            taken.update((port, port + 10000))
            plan.setdefault(service.name, {})[name] = port
    return plan


def spark_home() -> str:
    """The pip pyspark's folder (it has bin/spark-class and the jars)."""
    import importlib.util

    found = importlib.util.find_spec("pyspark")
    if found is None or found.origin is None:
        raise StackError("pyspark is not installed: make setup")
    return str(Path(found.origin).parent)


# --- CLI ------------------------------------------------------------------------------------------
def _print_status(stack: Stack) -> int:
    rows = stack.status()
    if not rows:
        print(f"no stack in {stack.state_dir}")
        return 1
    print(f"stack in {stack.state_dir} (logs {stack.logs})")
    for row in rows:
        ports = ", ".join(f"{k}{'' if up else ' (closed)'}" for k, up in row["ports"].items()) or "-"
        state = "alive" if row["alive"] else "DEAD "
        print(f"  {row['service']:<24} pid {row['pid']:<8} {state:<6} {row['rss_mb']:>6} MB  {ports}")
    return 0 if all(r["alive"] for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("up", "down", "status", "compose"))
    parser.add_argument("--dir", type=Path, default=Path(os.environ.get("AL_STACK_DIR", DEFAULT_DIR)))
    parser.add_argument(
        "--local-executor",
        action="store_true",
        help="LocalExecutor on the same PostgreSQL: no Celery workers (a single machine without Redis)",
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="free ports instead of the defaults (8080, 5000, ...)"
    )
    args = parser.parse_args(argv)
    if args.action == "compose":
        from devstack.compose import render_compose

        sys.stdout.write(render_compose())
        return 0
    stack = Stack(args.dir)
    if args.action == "up":
        stack = Stack(
            args.dir,
            ports=free_ports() if args.free_ports else stack.ports,
            executor="LocalExecutor" if args.local_executor else "CeleryExecutor",
        )
    if args.action == "status":
        return _print_status(stack)
    if args.action == "down":
        late = stack.down()
        pids, ports = stack.leftovers()
        for _ in range(40):  # killed stragglers take a moment to go
            if not (pids or ports):
                break
            time.sleep(0.25)
            pids, ports = stack.leftovers()
        say(f"stack stopped{'; killed stragglers ' + ', '.join(late) if late else ''}")
        if pids or ports:
            print(f"error: still running: pids {pids}, ports {ports}", file=sys.stderr)
            return 1
        return 0
    try:
        stack.up()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_status(stack)
    say(f"Airflow UI {stack.api_url} (user admin, password in {stack.state_dir / 'credentials.env'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
