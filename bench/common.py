"""Shared helpers of the benchmarks: machine facts, memory sampling, Spark, output.

Nothing here changes how al_tasks computes anything; it only measures and records.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
#: Committed results (CSV, JSON, PNG).
RESULTS_DIR = BENCH_DIR / "results"
#: Scratch (workspaces, synthetic corpora, MLflow DB): never committed.
DEFAULT_WORKDIR = Path(os.environ.get("AL_BENCH_WORKDIR", "/tmp/al-bench"))


def say(*parts: object) -> None:
    """Progress line on stdout, timestamped and flushed (the run is long)."""
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def quiet_warnings() -> None:
    """Silence warnings emitted once per model fit (scikit-learn's ``penalty`` deprecation,
    PySpark's pandas-3 notice); they say nothing about the benchmark and flood the log."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*penalty.*")
    warnings.filterwarnings("ignore", message=".*l1_ratio.*")


def machine_info() -> dict:
    """nproc, memory, CPU model, OS and the versions that matter, as a flat dict."""
    import importlib.metadata as md

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    java = ""
    with contextlib.suppress(Exception):
        import subprocess

        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
        java = (out.stderr or out.stdout).splitlines()[0]
    versions = {}
    for pkg in ("pyspark", "scikit-learn", "modAL-python", "hyperopt", "mlflow", "pandas", "pyarrow", "numpy", "scipy"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[pkg] = md.version(pkg)
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "java": java,
        **versions,
    }


class PeakRSS:
    """Samples the RSS of this process and all its descendants in a background thread.

    In Spark local mode the tree is: this Python process (the driver's Python side) ->
    spark-submit JVM (driver and executor in one) -> pyspark daemon -> Python workers.
    Peaks are kept per role and for the whole tree (sum of RSS at one instant; shared
    copy-on-write pages of forked workers are counted once per process, so the total
    is an upper bound). Processes of any other name ("other") are short-lived children
    the JVM forks (Hadoop's local file system shells out to chmod/stat while writing):
    right after the fork they report the JVM's whole RSS although they share its pages,
    so they are kept apart and left out of the total.

    Use as a context manager; afterwards ``peaks`` is a dict of GiB floats with keys
    ``total``, ``driver_python``, ``jvm``, ``python_workers``, ``other``.
    ``extra_pids`` may name other processes (e.g. a baseline child) to include.
    """

    def __init__(self, interval: float = 0.1, root_pid: int | None = None):
        self.interval = interval
        self.root = psutil.Process(root_pid or os.getpid())
        self.peaks = {"total": 0.0, "driver_python": 0.0, "jvm": 0.0, "python_workers": 0.0, "other": 0.0}
        #: 1-minute load average when the step started, and the highest seen during it.
        self.load_before = os.getloadavg()[0]
        self.load_max = self.load_before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def sample(self) -> dict:
        """One sample: GiB per role at this instant."""
        now = {"driver_python": 0.0, "jvm": 0.0, "python_workers": 0.0, "other": 0.0}
        procs = [self.root]
        with contextlib.suppress(psutil.Error):
            procs += self.root.children(recursive=True)
        for proc in procs:
            try:
                rss = proc.memory_info().rss / 2**30
                if proc.pid == self.root.pid:
                    role = "driver_python"
                else:
                    name = proc.name()
                    role = "jvm" if name == "java" else "python_workers" if name.startswith("python") else "other"
            except psutil.Error:
                continue  # a worker that exited between listing and reading
            now[role] += rss
        now["total"] = now["driver_python"] + now["jvm"] + now["python_workers"]
        return now

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, value in self.sample().items():
                self.peaks[key] = max(self.peaks[key], value)
            self.load_max = max(self.load_max, os.getloadavg()[0])
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.load_before = self.load_max = os.getloadavg()[0]
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for key, value in self.sample().items():
            self.peaks[key] = max(self.peaks[key], value)


def bench_spark(config):
    """The one SparkSession of a benchmark run, built by al_tasks.spark.spark_session.

    Before the JVM starts: the repository root goes on PYTHONPATH so Python workers can
    unpickle objects defined in :mod:`bench` (the JVM passes its environment on to
    them), and the console progress bar is turned off (it would garble the log).
    """
    from al_tasks.spark import spark_session

    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell")
    return spark_session(config, app_name="al-bench")


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def replace_section(path: Path, name: str, body: str) -> bool:
    """Replace the text between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in
    ``path`` (the README's generated tables). Returns False when the markers are absent."""
    if not path.exists():
        return False
    text = path.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{body.rstrip()}\n{end}{tail}")
    return True


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A GitHub markdown table from a list of dicts (all values already formatted)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"
