"""The rejects log: every refused label row, kept whole with its reason."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from al_tasks.io.atomic import atomic_write_bytes
from al_tasks.labelling.store import file_lock, frame_csv_bytes, read_csv_text


def write_rejects(rejects_df: pd.DataFrame, path: str | os.PathLike, *, source: str | None = None) -> int:
    """Append rejected rows to the CSV at ``path`` (created if absent); returns rows added.

    A ``source`` column (e.g. the labelled file's S3 URI) is added. Rows already in the
    file are kept; columns are the union of old and new. A new row identical to one
    already there (a retried task) is not written twice. The write is atomic.
    """
    path = Path(path)
    new = rejects_df.copy()
    if source is not None or "source" not in new.columns:
        new["source"] = source or ""
    new = new.astype(str)
    with file_lock(path):
        existing = read_csv_text(path) if path.exists() and path.stat().st_size else None
        if existing is not None:
            columns = list(existing.columns) + [c for c in new.columns if c not in existing.columns]
            existing = existing.reindex(columns=columns, fill_value="")
            new = new.reindex(columns=columns, fill_value="")
            seen = set(existing.itertuples(index=False, name=None))
            new = new[[tuple(row) not in seen for row in new.itertuples(index=False, name=None)]]
            if new.empty:
                return 0
            combined = pd.concat([existing, new], ignore_index=True)
        else:
            combined = new
        atomic_write_bytes(path, frame_csv_bytes(combined))
    return len(new)
