"""Run this project's Airflow locally: AIRFLOW_HOME, environment, components, REST API.

Used by the demo (``python -m devstack.demo``) and the end-to-end tests; it never imports
Airflow itself (it builds the environment and runs the ``airflow`` command beside the
venv's python), so it is safe to import anywhere.

    settings = AirflowSettings(home=Path(".demo/airflow_home"), api_port=8080,
                               s3=S3Settings("http://127.0.0.1:8333", "key", "secret"))
    env = prepare_airflow_home(settings)           # folders, secrets, passwords file
    run_airflow(["db", "migrate"], env)
    with AirflowComponents(settings, env) as components:   # api-server, scheduler, ...
        api = AirflowApi(settings.base_url, settings.admin_user, settings.admin_password)
        api.wait_for_dag("active_learning_loop")
        api.trigger("active_learning_loop", conf={"max_rounds": 3})

Every server listens on 127.0.0.1 only: the API server gets ``--host 127.0.0.1``, and
the scheduler and triggerer are started with ``--skip-serve-logs`` because their log
servers bind every interface and cannot be told otherwise (all components share one
log folder on this machine, so the API server reads task logs from disk anyway).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from al_tasks.config import REPO_ROOT
from devstack.processes import HOST, ManagedProcess, free_port, port_in_use, start_process

DAG_ID = "active_learning_loop"
#: Components of an Airflow 3 deployment, as ``airflow`` sub-commands.
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class AirflowError(RuntimeError):
    """An Airflow command or component failed; the message carries its log tail."""


@dataclass(frozen=True)
class S3Settings:
    """Where the labelling bucket is and the credentials to reach it."""

    endpoint_url: str = "http://127.0.0.1:8333"
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"


@dataclass
class AirflowSettings:
    """One local Airflow deployment.

    ``admin_password`` None: a random one is made on first use and kept in
    ``<home>/simple_auth_manager_passwords.json`` (the simple auth manager's own file).
    ``all_admins``: no login at all, everyone is admin (loopback demos and screenshots).
    ``extra_env``: more variables for every component (e.g. ``AL_WORKSPACE``).
    """

    home: Path
    api_port: int = 8080
    dags_folder: Path = REPO_ROOT / "dags"
    plugins_folder: Path = REPO_ROOT / "plugins"
    s3: S3Settings = field(default_factory=S3Settings)
    admin_user: str = "admin"
    admin_password: str | None = None
    all_admins: bool = False
    #: Task processes the LocalExecutor may run at once. The loop's tasks are mostly
    #: sequential and Spark-heavy; 2 leaves room for the alert side branch.
    parallelism: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def db_path(self) -> Path:
        return Path(self.home).resolve() / "airflow.db"

    @property
    def logs_folder(self) -> Path:
        return Path(self.home).resolve() / "logs"

    @property
    def passwords_file(self) -> Path:
        return Path(self.home).resolve() / "simple_auth_manager_passwords.json"


def airflow_binary() -> Path:
    """The ``airflow`` command of this interpreter's environment."""
    beside = Path(sys.executable).parent / "airflow"
    if beside.exists():
        return beside
    raise AirflowError(f"no 'airflow' next to {sys.executable}: install the project (make setup)")


def s3_connection(s3: S3Settings) -> str:
    """``AIRFLOW_CONN_AL_S3``: an ``aws`` connection for an S3-compatible endpoint.

    Path-style addressing because a server on 127.0.0.1 has no per-bucket host names.
    """
    extra: dict[str, Any] = {
        "endpoint_url": s3.endpoint_url,
        "region_name": s3.region,
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    connection: dict[str, Any] = {"conn_type": "aws", "extra": extra}
    if s3.access_key:
        connection.update(login=s3.access_key, password=s3.secret_key)
    return json.dumps(connection)


def _home_secrets(home: Path) -> dict[str, str]:
    """Secrets every component must share (JWT signing key, API secret key).

    Made once per AIRFLOW_HOME and kept there: tokens signed by the scheduler for its
    task processes must verify in the API server.
    """
    path = home / "local_secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    values = {"jwt_secret": secrets.token_urlsafe(32), "api_secret_key": secrets.token_urlsafe(32)}
    path.write_text(json.dumps(values))
    path.chmod(0o600)
    return values


def _admin_password(settings: AirflowSettings) -> str:
    """The admin's password, written to the simple auth manager's passwords file."""
    path = settings.passwords_file
    stored = json.loads(path.read_text()) if path.exists() and path.stat().st_size else {}
    password = settings.admin_password or stored.get(settings.admin_user) or secrets.token_urlsafe(12)
    if stored.get(settings.admin_user) != password:
        stored[settings.admin_user] = password
        path.write_text(json.dumps(stored))
        path.chmod(0o600)
    return password


def airflow_environment(settings: AirflowSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of every Airflow process of this deployment (and of ``dag.test()``)."""
    home = Path(settings.home).resolve()
    shared = _home_secrets(home)
    env = dict(os.environ if base is None else base)
    # A developer's own Airflow settings must not leak into this deployment; their
    # AIRFLOW_CONN_* connections do pass (e.g. AIRFLOW_CONN_AL_ALERT_WEBHOOK for alerts).
    for key in [k for k in env if k.startswith("AIRFLOW__")]:
        del env[key]
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(settings.dags_folder).resolve()),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(Path(settings.plugins_folder).resolve()),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # A new DAG is unpaused: a run triggered through the API must start by itself.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # SQLite works with the LocalExecutor in Airflow 3 (it is what `airflow standalone` uses).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{settings.db_path}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(settings.parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.base_url}/execution/",
            "AIRFLOW__API__BASE_URL": settings.base_url,
            "AIRFLOW__API__HOST": HOST,
            "AIRFLOW__API__PORT": str(settings.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": shared["api_secret_key"],
            "AIRFLOW__API_AUTH__JWT_SECRET": shared["jwt_secret"],
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{settings.admin_user}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(settings.all_admins),
            # Log servers are not started (--skip-serve-logs); should anything start one, it
            # gets a free port rather than a well-known one another deployment may hold.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(settings.logs_folder),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
            # Quick pick-up of new and changed DAG files (a local deployment is small).
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW_CONN_AL_S3": s3_connection(settings.s3),
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
            "MLFLOW_ENABLE_TELEMETRY": "false",
            "DO_NOT_TRACK": "1",
            "SCARF_ANALYTICS": "false",
            "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(settings.extra_env)
    return env


def prepare_airflow_home(settings: AirflowSettings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """Create the AIRFLOW_HOME folders and the admin password; return the environment.

    Sets ``settings.admin_password`` to the password in effect.
    """
    home = Path(settings.home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings.logs_folder.mkdir(parents=True, exist_ok=True)
    settings.admin_password = _admin_password(settings)
    return airflow_environment(settings, base)


def run_airflow(
    args: Sequence[str], env: Mapping[str, str], *, timeout: float = 600, log_path: Path | None = None
) -> str:
    """Run ``airflow <args>`` to completion; returns its output. Raises AirflowError."""
    command = [str(airflow_binary()), *args]
    result = subprocess.run(
        command, env=dict(env), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    if log_path is not None:
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(command)}\n{output}\n")
    if result.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        raise AirflowError(f"`airflow {' '.join(args)}` exited with {result.returncode}:\n{tail}")
    return output


class AirflowComponents:
    """api-server, scheduler, dag-processor and triggerer as separate processes.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. Logs:
    ``<home>/component-logs/<name>.log``.
    """

    def __init__(
        self, settings: AirflowSettings, env: Mapping[str, str], components: Iterable[str] = COMPONENTS
    ) -> None:
        self.settings = settings
        self.env = dict(env)
        self.names = list(components)
        self.processes: dict[str, ManagedProcess] = {}
        self.log_dir = Path(settings.home).resolve() / "component-logs"

    def command(self, name: str) -> list[str]:
        airflow = str(airflow_binary())
        if name == "api-server":
            return [airflow, "api-server", "--host", HOST, "--port", str(self.settings.api_port), "--workers", "1"]
        if name in ("scheduler", "triggerer"):
            return [airflow, name, "--skip-serve-logs"]
        if name == "dag-processor":
            return [airflow, "dag-processor"]
        raise ValueError(f"unknown Airflow component {name!r}; choose from {COMPONENTS}")

    def start(self, timeout: float = 180) -> AirflowComponents:
        if port_in_use(self.settings.api_port):
            raise AirflowError(
                f"port {self.settings.api_port} on {HOST} is in use: stop what listens there or choose another port"
            )
        for name in self.names:
            self.processes[name] = start_process(name, self.command(name), self.env, self.log_dir / f"{name}.log")
        try:
            self.wait_until_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def check_running(self) -> None:
        """Raise AirflowError, with its log tail, if a component has exited."""
        for name, proc in self.processes.items():
            if not proc.is_running():
                raise AirflowError(
                    f"airflow {name} exited with code {proc.process.returncode}; "
                    f"log {proc.log_path}:\n{proc.log_tail()}"
                )

    def wait_until_healthy(self, timeout: float) -> None:
        """Until the API server answers its health check (components still running)."""
        import requests

        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                response = requests.get(f"{self.settings.base_url}/api/v2/monitor/health", timeout=5)
                if response.ok:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(1)
        raise AirflowError(
            f"the API server at {self.settings.base_url} was not healthy within {timeout:.0f} s "
            f"({last}); log:\n{self.processes['api-server'].log_tail() if 'api-server' in self.processes else ''}"
        )

    def logs(self, lines: int = 80) -> str:
        """Tail of every component's log, for failure reports."""
        return "\n\n".join(
            f"===== airflow {name} ({proc.log_path}) =====\n{proc.log_tail(lines)}"
            for name, proc in self.processes.items()
        )

    def stop(self) -> None:
        # Scheduler first, so it does not start new task processes while others stop.
        order = sorted(
            self.processes,
            key=lambda n: ["scheduler", "triggerer", "dag-processor", "api-server"].index(n) if n in COMPONENTS else 9,
        )
        for name in order:
            self.processes[name].stop()

    def __enter__(self) -> AirflowComponents:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- REST API --------------------------------------------------------------------------------
class AirflowApi:
    """The few Airflow 3 REST API calls the demo and the tests need.

    Authenticates with the simple auth manager: ``POST /auth/token`` with user and
    password (or ``GET /auth/token`` in all-admins mode) gives a JWT for
    ``Authorization: Bearer``; it is renewed on a 401.
    """

    def __init__(
        self, base_url: str, username: str | None = None, password: str | None = None, timeout: float = 30
    ) -> None:
        import requests

        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy: the server is on loopback
        self._token: str | None = None

    def token(self) -> str:
        if self.username and self.password:
            response = self.session.post(
                f"{self.base_url}/auth/token",
                timeout=self.timeout,
                json={"username": self.username, "password": self.password},
            )
        else:
            response = self.session.get(f"{self.base_url}/auth/token", timeout=self.timeout)
        if not response.ok:
            raise AirflowError(
                f"could not get an API token from {self.base_url}/auth/token: "
                f"HTTP {response.status_code} {response.text[:300]}"
            )
        self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            if self._token is None:
                self.token()
            response = self.session.request(
                method,
                f"{self.base_url}{path}",
                timeout=self.timeout,
                headers={"Authorization": f"Bearer {self._token}"},
                **kwargs,
            )
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            if not response.ok:
                raise AirflowError(f"{method} {path}: HTTP {response.status_code} {response.text[:500]}")
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    # -- DAGs and runs --------------------------------------------------------------------
    def import_errors(self) -> list[dict]:
        return self.get("/api/v2/importErrors").get("import_errors", [])

    def wait_for_dag(
        self,
        dag_id: str = DAG_ID,
        timeout: float = 180,
        components: AirflowComponents | None = None,
        dag_file: str = "active_learning_loop",
    ) -> dict:
        """Until the dag-processor has parsed ``dag_id``; raises with the import errors of
        ``<dags folder>/<dag_file>.py``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if components is not None:
                components.check_running()
            try:
                return self.get(f"/api/v2/dags/{dag_id}")
            except AirflowError as exc:
                if "HTTP 404" not in str(exc):
                    raise
            # Only errors of this DAG's own file matter; other DAG files may be broken.
            errors = [e for e in self.import_errors() if str(e.get("filename", "")).endswith(f"{dag_file}.py")]
            if errors:
                details = "\n".join(f"{e.get('filename')}:\n{e.get('stack_trace')}" for e in errors)
                raise AirflowError(f"DAG {dag_id!r} did not load:\n{details}")
            time.sleep(2)
        raise AirflowError(f"DAG {dag_id!r} did not appear in {timeout:.0f} s (is the dag-processor running?)")

    def unpause(self, dag_id: str = DAG_ID) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(
        self,
        dag_id: str = DAG_ID,
        conf: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        note: str | None = None,
    ) -> dict:
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        if note:
            body["note"] = note
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)

    def dag_runs(self, dag_id: str = DAG_ID) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns", order_by="run_after", limit=100)["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=100)["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """The XCom value (deserialised), or None when there is none."""
        try:
            entry = self.get(
                f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                deserialize="true",
                stringify="false",
            )
        except AirflowError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise
        return entry.get("value")


# --- following the loop ---------------------------------------------------------------------
FINISHED = {"success", "failed"}


def round_line(status: dict) -> str:
    """One line per finished round, from the ``loop_status`` task's result."""
    accuracy, f1 = status.get("accuracy"), status.get("macro_f1")
    query = status.get("query_csv_uri") or "none (last round)"
    return (
        f"round {status['round']}: {status.get('n_labelled')} labels, "
        f"accuracy {'n/a' if accuracy is None else f'{accuracy:.3f}'}, "
        f"macro-F1 {'n/a' if f1 is None else f'{f1:.3f}'}, query set {query} -> {status['status']}: "
        f"{status.get('detail')}"
    )


def follow_loop(
    api: AirflowApi,
    *,
    max_rounds: int,
    timeout: float,
    echo: Callable[[str], None] = print,
    check: Callable[[], None] | None = None,
    poll_seconds: float = 5.0,
) -> list[dict]:
    """Wait for the loop's runs to finish, printing a line per round; returns the
    ``loop_status`` results in round order. Ends when a round stops the loop, a run
    fails, ``max_rounds`` rounds are done, or ``timeout`` passes (AirflowError).
    """
    reported: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check is not None:
            check()
        for run in api.dag_runs(DAG_ID):
            run_id, state = run["dag_run_id"], run["state"]
            if run_id in reported or state not in FINISHED:
                continue
            status = api.xcom(DAG_ID, run_id, "loop_status")
            if state == "failed" or not status:
                failed = [ti["task_id"] for ti in api.task_instances(DAG_ID, run_id) if ti["state"] == "failed"]
                status = {
                    **(status or {}),
                    "round": (run.get("conf") or {}).get("round", "?"),
                    "status": "failed",
                    "detail": f"run {run_id} failed (tasks {failed}); see its logs in the Airflow UI",
                }
            status["run_id"] = run_id
            reported[run_id] = status
            echo(round_line(status))
            if status["status"] in ("stopped", "failed") or len(reported) >= max_rounds:
                return sorted(reported.values(), key=lambda s: int(s["round"]) if str(s["round"]).isdigit() else 0)
        time.sleep(poll_seconds)
    raise AirflowError(f"the loop did not finish {max_rounds} rounds within {timeout:.0f} s")
