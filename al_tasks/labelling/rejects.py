"""The rejects log: every refused label row, kept whole with its reason.

The log (``labels/rejects.csv`` of the task's workspace) is written for people, like
every CSV of the product (:mod:`al_tasks.io.people_csv`): UTF-8 with BOM, CRLF, and no
cell that a spreadsheet would run as a formula (a rejected ``=HYPERLINK(...)`` is kept
as ``'=HYPERLINK(...)``). Each row names the round, the file (``source`` and
``source_sha256``) and its spreadsheet line, and that triple identifies it: a retried
or cleared ingest of the same file adds nothing, wherever the file was read from
(inbox or processed folder). File mode: see :mod:`al_tasks.io.atomic`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from al_tasks.io.atomic import atomic_write_bytes, file_lock
from al_tasks.io.people_csv import people_csv_bytes, text_cell

#: The columns that identify a rejected row in the log.
REJECT_KEY = ("round", "source_sha256", "line")


def read_rejects(path: str | os.PathLike) -> pd.DataFrame:
    """The rejects log as written (every column str, cells as a spreadsheet shows them)."""
    path = Path(path)
    if not path.exists() or not path.stat().st_size:
        return pd.DataFrame()
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def _as_logged(rejects_df: pd.DataFrame, source: str | None, round_number: int | None, sha256: str | None):
    """The rows as the log holds them: key columns added, every cell formula-safe text."""
    new = rejects_df.copy()
    if source is not None or "source" not in new.columns:
        new["source"] = source or ""
    new["round"] = "" if round_number is None else str(int(round_number))
    new["source_sha256"] = sha256 or ""
    return new.map(text_cell).astype(str)


def _row_keys(frame: pd.DataFrame) -> list[tuple]:
    """(round, sha256, line) of each row; the whole row where the file's hash is unknown."""
    whole = list(frame.itertuples(index=False, name=None))
    return [
        tuple(frame.iloc[i][list(REJECT_KEY)]) if frame.iloc[i]["source_sha256"] else ("row", *whole[i])
        for i in range(len(frame))
    ]


def write_rejects(
    rejects_df: pd.DataFrame,
    path: str | os.PathLike,
    *,
    source: str | None = None,
    round_number: int | None = None,
    source_sha256: str | None = None,
) -> int:
    """Append rejected rows to the log at ``path`` (created if absent); returns rows added.

    Columns ``source``, ``round`` and ``source_sha256`` are added. A row whose
    (round, source_sha256, line) is already in the log is not written again (without a
    hash: a row identical to one already there). Columns are the union of old and new;
    the write is atomic.
    """
    path = Path(path)
    new = _as_logged(rejects_df, source, round_number, source_sha256)
    with file_lock(path):
        existing = read_rejects(path)
        if len(existing.columns):
            columns = list(existing.columns) + [c for c in new.columns if c not in existing.columns]
            existing = existing.reindex(columns=columns, fill_value="")
            new = new.reindex(columns=columns, fill_value="")
            seen = set(_row_keys(existing))
            new = new[[key not in seen for key in _row_keys(new)]]
            if new.empty:
                return 0
            combined = pd.concat([existing, new], ignore_index=True)
        else:
            combined = new
        atomic_write_bytes(path, people_csv_bytes(combined))
    return len(new)
