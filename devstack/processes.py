"""Local processes of the development stack: ports, process groups, logs.

Every server the harness starts runs in its own session (process group), so stopping
it reaches every child it forked (task processes, Spark JVMs); its output goes to one
log file. Used by the SeaweedFS, Airflow, MLflow and Spark helpers of ``devstack``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


def say(message: str) -> None:
    """A progress line for people, with a time stamp (the harness's CLIs print, the product logs)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port(host: str = HOST) -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on (or holds) ``host:port``.

    Connections of a stopped server linger in TIME_WAIT for a minute; servers (Go's
    net.Listen, Python's socketserver) bind with SO_REUSEADDR and are not stopped by
    them, so neither is this check: a server can be restarted on its port at once.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def venv_binary(name: str) -> Path:
    """The executable ``name`` next to this interpreter (the virtualenv's bin/)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise FileNotFoundError(f"no {name!r} next to {sys.executable}: install the project (make setup)")
    return path


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` (gone or foreign groups are ignored)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class ManagedProcess:
    """A process started in its own process group, with its output in ``log_path``."""

    name: str
    process: subprocess.Popen
    log_path: Path

    def is_running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(text[-lines:])

    def group_members(self) -> list:
        """The live processes of this process group (psutil handles)."""
        import psutil

        members = []
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == self.process.pid:
                    members.append(proc)
            except (ProcessLookupError, psutil.Error):
                continue
        return members

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to the whole group (the component and every child it forked), then
        SIGKILL to whatever of it is left after ``timeout``. Idempotent.
        """
        import psutil

        # Taken before signalling: psutil handles remember each process's start time,
        # so a leftover is killed only if it is still that same process.
        members = self.group_members() if self.process.poll() is None else []
        if self.process.poll() is None:
            signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                signal_group(self.process.pid, signal.SIGKILL)  # the leader lives: the group is ours
                self.process.wait(timeout=10)
        # Children (task processes, Spark JVMs) may outlive the leader.
        for proc in members:
            try:
                if proc.is_running():
                    proc.kill()
            except psutil.Error:
                pass


def start_process(
    name: str, command: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> ManagedProcess:
    """Start ``command`` in a new session (own process group), output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name=name, process=process, log_path=log_path)
