"""A real SeaweedFS S3 server for tests (no mocks).

Use it from a test module with an explicit import (conftest.py belongs to someone else):

    from tests.fixtures_s3 import seaweedfs  # noqa: F401

    def test_something(seaweedfs):
        client = seaweedfs.client()
        client.put_object(Bucket=seaweedfs.bucket, Key="k", Body=b"v")

(or register the module once in conftest.py: ``pytest_plugins = ["tests.fixtures_s3"]``).

The server runs once per test session on free 127.0.0.1 ports (never the demo's 8333),
with the bucket created and the credentials enforced. Tests share the bucket, so each
should write under its own key prefix (the ``s3_prefix`` fixture gives one).
"""

from __future__ import annotations

import uuid

import pytest

from al_tasks.services import SeaweedFS, SeaweedFSError, find_weed_binary, start_seaweedfs

BUCKET = "labelling-test"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key-0123456789"


# pytest makes a separate instance of a session fixture for every module that imports
# it; this keeps it to one server per session.
_running: dict[str, SeaweedFS] = {}


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory):
    """A running SeaweedFS (:class:`al_tasks.services.SeaweedFS`): ``.endpoint_url``,
    ``.bucket``, ``.access_key``, ``.secret_key``, ``.client()``."""
    shared = _running.get("server")
    if shared is not None and shared.is_running():
        yield shared
        return
    try:
        find_weed_binary()
    except SeaweedFSError as exc:
        pytest.fail(str(exc))  # a missing binary is a broken setup, not a reason to skip
    base = tmp_path_factory.mktemp("seaweedfs")
    try:
        server = start_seaweedfs(
            base / "data",
            bucket=BUCKET,
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            s3_port=None,  # a free port: a demo may be running on 8333
            log_path=base / "weed.log",
            timeout=60,
        )
    except SeaweedFSError as exc:
        # The message already carries the tail of the server log.
        pytest.fail(f"SeaweedFS did not start: {exc}")
    _running["server"] = server
    try:
        yield server
    finally:
        _running.pop("server", None)
        server.stop()


@pytest.fixture
def s3_prefix() -> str:
    """A key prefix unique to one test, so tests sharing the bucket never see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
