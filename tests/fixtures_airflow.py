"""Airflow for tests: an in-process Airflow for ``dag.test()`` and a real deployment.

Import the fixtures explicitly where they are used (conftest.py belongs to someone else):

    from tests.fixtures_s3 import seaweedfs  # noqa: F401
    from tests.fixtures_airflow import airflow_in_process  # noqa: F401

* ``airflow_in_process`` (module scope): a throw-away AIRFLOW_HOME with a migrated
  SQLite DB, this repository's ``dags/`` and ``plugins/``, the ``al_s3`` connection to
  the SeaweedFS fixture and a throw-away workspace, configured in *this* process (as
  ``dag.test()`` needs). The environment is restored when the module's tests end.
* ``airflow_deployment`` (module scope): the real api-server, scheduler,
  dag-processor and triggerer as separate processes on free 127.0.0.1 ports
  (``al_tasks.airflow_env``, the demo's code), with a logged-in REST client.

Both use the same settings code as the demo, so the tests exercise what users run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from al_tasks.airflow_env import (
    DAG_ID,
    AirflowApi,
    AirflowComponents,
    AirflowSettings,
    S3Settings,
    free_port,
    prepare_airflow_home,
    run_airflow,
)
from al_tasks.config import REPO_ROOT, LoopConfig

DAG_FILE = REPO_ROOT / "dags" / "active_learning_loop.py"
PLUGINS_DIR = REPO_ROOT / "plugins"
TASK = "product_group"
#: Documents in the tests' corpus: a random sample of the shipped one, so that Spark's
#: featurize and scoring take seconds, not minutes, on a shared 2-core machine.
SMALL_CORPUS_DOCS = 2000


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """A random sample of the shipped CFPB corpus (same columns), as CSV."""
    import pandas as pd

    from al_tasks.config import SHIPPED_CORPUS

    frame = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False)
    path = tmp_path_factory.mktemp("corpus") / "cfpb_sample.csv"
    frame.sample(n=min(SMALL_CORPUS_DOCS, len(frame)), random_state=0).to_csv(path, index=False)
    return path


@dataclass
class AirflowTestSetup:
    """Where a test's Airflow, workspace and bucket are."""

    settings: AirflowSettings
    env: dict[str, str]
    workspace: Path
    bucket: str
    task: str = TASK

    def config(self, **overrides: Any) -> LoopConfig:
        """The LoopConfig the DAG's tasks see (before run-conf overrides)."""
        return LoopConfig.from_env(self.env).with_overrides(overrides)


def _clean_environment() -> dict[str, str]:
    """This process's environment without the developer's Airflow connections and loop
    settings, so that neither an alert channel nor an AL_* value leaks into a test."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AL_"))}


def _settings(base: Path, seaweedfs) -> tuple[AirflowSettings, Path]:
    workspace = base / "workspace"
    settings = AirflowSettings(
        home=base / "airflow_home",
        api_port=free_port(),
        s3=S3Settings(seaweedfs.endpoint_url, seaweedfs.access_key, seaweedfs.secret_key),
        extra_env={
            "AL_WORKSPACE": str(workspace),
            "AL_BUCKET": seaweedfs.bucket,
            "AL_S3_ENDPOINT_URL": seaweedfs.endpoint_url,
            # Tests share 2 cores with everything else: a small driver is plenty here.
            "AL_SPARK_DRIVER_MEMORY": "2g",
        },
    )
    return settings, workspace


def _configure_airflow_here() -> None:
    """Make this process's Airflow use the environment just set.

    Airflow reads its settings when first imported; if another test module imported it
    earlier (with another AIRFLOW_HOME), its ORM and folders are re-read here.
    """
    if str(PLUGINS_DIR) not in sys.path:
        sys.path.append(str(PLUGINS_DIR))  # as Airflow does for its plugins folder
    if "airflow.settings" not in sys.modules:
        import airflow  # noqa: F401  (initialises settings from the environment)

        return
    from airflow import settings

    settings.dispose_orm()
    settings.configure_vars()
    settings.prepare_syspath_for_config_and_plugins()
    settings.configure_orm()


@pytest.fixture(scope="module")
def airflow_in_process(seaweedfs, tmp_path_factory) -> Iterator[AirflowTestSetup]:
    """Airflow configured in this process for ``dag.test()`` (see module docstring)."""
    settings, workspace = _settings(tmp_path_factory.mktemp("airflow_dag_test"), seaweedfs)
    env = prepare_airflow_home(settings, _clean_environment())
    run_airflow(["db", "migrate"], env, timeout=300)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        _configure_airflow_here()
        yield AirflowTestSetup(settings=settings, env=env, workspace=workspace, bucket=seaweedfs.bucket)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        _stop_spark()


def _stop_spark() -> None:
    """Stop a SparkSession the in-process tasks started (its JVM holds memory)."""
    if "pyspark" not in sys.modules:
        return
    import logging

    # py4j says goodbye from __del__ at interpreter exit, after pytest closed the streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def load_dag(dag_id: str = DAG_ID):
    """The DAG as Airflow parses it from the dags folder."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert not bag.import_errors, f"DAG file did not import: {bag.import_errors}"
    return bag.get_dag(dag_id)


@dataclass
class Deployment:
    setup: AirflowTestSetup
    components: AirflowComponents
    api: AirflowApi


@pytest.fixture(scope="module")
def airflow_deployment(seaweedfs, tmp_path_factory) -> Iterator[Deployment]:
    """The real Airflow components on free 127.0.0.1 ports, logged in through the API."""
    settings, workspace = _settings(tmp_path_factory.mktemp("airflow_e2e"), seaweedfs)
    env = prepare_airflow_home(settings, _clean_environment())
    run_airflow(["db", "migrate"], env, timeout=300)
    components = AirflowComponents(settings, env)
    components.start(timeout=180)
    try:
        api = AirflowApi(settings.base_url, settings.admin_user, settings.admin_password)
        yield Deployment(AirflowTestSetup(settings=settings, env=env, workspace=workspace, bucket=seaweedfs.bucket),
                         components, api)
    finally:
        components.stop()


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 (free port) keeping the JSON body of every POST."""

    def __init__(self) -> None:
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.bodies.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/al"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


class OutboxAnswerer(threading.Thread):
    """A labeller for one query set: waits for ``outbox_key``, then writes
    ``answer(query_csv_bytes)`` to ``inbox_key``. ``error`` holds what went wrong."""

    def __init__(self, client: Any, bucket: str, outbox_key: str, inbox_key: str,
                 answer: Callable[[bytes], bytes], timeout: float = 600, poll_seconds: float = 1.0) -> None:
        super().__init__(name="outbox-answerer", daemon=True)
        self.client, self.bucket = client, bucket
        self.outbox_key, self.inbox_key = outbox_key, inbox_key
        self.answer, self.timeout, self.poll_seconds = answer, timeout, poll_seconds
        self.stopping = threading.Event()
        self.answered: bytes | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        from al_tasks import s3

        deadline = time.monotonic() + self.timeout
        try:
            while not self.stopping.is_set() and time.monotonic() < deadline:
                if s3.object_exists(self.client, self.bucket, self.outbox_key):
                    # The query set is uploaded after its manifest, in one PUT: complete.
                    query = s3.read_bytes(self.client, self.bucket, self.outbox_key)
                    self.answered = self.answer(query)
                    s3.write_bytes(self.client, self.bucket, self.inbox_key, self.answered, content_type="text/csv")
                    return
                self.stopping.wait(self.poll_seconds)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)
