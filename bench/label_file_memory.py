"""Peak memory of reading a labelled file, each case in a fresh process.

    python -m bench.label_file_memory            # writes bench/results/label_file_memory.json

Cases (the ingest's own reader, :func:`al_tasks.labelling.ingest.read_labelled_file`,
with the limits the ingest step passes):

* ``refused_by_size``: a 52 MB file of 2 million repeated rows (what a stuck export or
  a wrong file looks like) under the default ``max_label_file_mb``: refused before it is read;
* ``refused_by_rows``: the same file with the size limit lifted: refused at the row
  limit (50 x the query set), having read only that many rows;
* ``at_the_row_limit``: a file of exactly the row limit of real complaint narratives
  (5000 rows for a query set of 100): read whole.

Peak memory is the child's ``ru_maxrss`` (it includes the interpreter and pandas, about
100 MB).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from al_tasks.config import SHIPPED_CORPUS, LoopConfig

RESULTS = Path(__file__).resolve().parent / "results" / "label_file_memory.json"
QUERY_SIZE = 100
_CHILD = """
import json, sys, time
from al_tasks.errors import LabelFileError
from al_tasks.labelling.ingest import read_labelled_file
path, ids, max_bytes, max_rows = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
started = time.perf_counter()
try:
    result = read_labelled_file(path, query_ids=ids, classes=(), max_bytes=max_bytes, max_rows=max_rows)
    outcome = f"read: {len(result.accepted)} accepted, {len(result.rejects)} rejected"
except LabelFileError as exc:
    outcome = f"refused: {exc}"
# VmHWM, not getrusage's ru_maxrss: Linux carries the parent's peak over fork + exec into
# ru_maxrss, so a child of a big pytest process would report the parent's memory.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
peak = hwm_kb / 1024
seconds = round(time.perf_counter() - started, 2)
print(json.dumps({"peak_rss_mb": round(peak, 1), "seconds": seconds, "outcome": outcome}))
"""


def write_repeated(path: Path, ids: list[str], megabytes: float = 52) -> Path:
    """A file of ``megabytes`` of the same few labelled rows, repeated."""
    block = "".join(f"{i},credit_card,a note\r\n" for i in ids[:10]).encode()
    with open(path, "wb") as handle:
        handle.write(b"id,label,note\r\n")
        for _ in range(int(megabytes * 1e6 / len(block)) + 1):
            handle.write(block)
    return path


def write_real(path: Path, rows: int) -> tuple[Path, list[str]]:
    """``rows`` real complaints (id, text, label) as a labelled file; (path, the first 100 ids)."""
    corpus = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, nrows=rows)
    frame = pd.DataFrame(
        {"id": corpus["Complaint ID"], "text": corpus["Consumer complaint narrative"], "label": "credit_card"}
    )
    frame = pd.concat([frame] * (rows // len(frame) + 1)).head(rows)
    frame.to_csv(path, index=False)
    return path, frame["id"].head(QUERY_SIZE).tolist()


def measure(path: Path, ids: list[str], *, max_bytes: int, max_rows: int, workdir: Path) -> dict:
    """Read ``path`` in a fresh Python process; its peak memory, time and outcome."""
    ids_file = workdir / "ids.json"
    ids_file.write_text(json.dumps(ids))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(ids_file), str(max_bytes), str(max_rows)],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        **json.loads(done.stdout),
        "file_mb": round(path.stat().st_size / 1e6, 1),
        "wall_seconds": round(time.perf_counter() - started, 2),
    }


def run(workdir: Path) -> dict[str, dict]:
    """The three cases of the module docstring."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = LoopConfig()
    row_limit = config.label_file_row_limit(QUERY_SIZE)
    default_bytes = int(config.max_label_file_mb * 1e6)
    real, ids = write_real(workdir / "at-limit.csv", row_limit)
    big = write_repeated(workdir / "big.csv", ids)
    return {
        "refused_by_size": measure(big, ids, max_bytes=default_bytes, max_rows=row_limit, workdir=workdir),
        "refused_by_rows": measure(big, ids, max_bytes=10**12, max_rows=row_limit, workdir=workdir),
        "at_the_row_limit": measure(real, ids, max_bytes=default_bytes, max_rows=row_limit, workdir=workdir),
    }


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        results = run(Path(scratch))
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
