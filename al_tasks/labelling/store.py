"""The label store: append-only, versioned, idempotent labels of a task.

Every accepted label is a row ``id, label, round, source, source_sha256, labelled_at``.
Rows are never changed or removed: a new label for an id is a new row and the latest
row wins. Appending a file that was already appended for the same round adds nothing,
so a retried ingest never counts a file twice. The seed is round 0; the answers to
round *n*'s query set are round *n*, so round *n* trains on rounds ``< n`` only.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.errors import LabelStoreError
from al_tasks.io.atomic import atomic_write_bytes
from al_tasks.labelling.ids import normalise_id

#: Columns of the label store.
STORE_COLUMNS = ("id", "label", "round", "source", "source_sha256", "labelled_at")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (serialises writers on one host)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV written by the product, every column as str, empty cells as ""."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    # backslashreplace: a cell holding undecodable bytes (lone surrogates) is written as
    # escapes instead of making the whole write fail.
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8", "backslashreplace")


def validated_labels(accepted_df: pd.DataFrame, source: str) -> tuple[list[str], list[str]]:
    """(ids, labels) of rows to append; raises :class:`LabelStoreError` on bad rows."""
    missing = [c for c in ("id", "label") if c not in accepted_df.columns]
    if missing:
        raise LabelStoreError(f"labels to append are missing column(s) {missing}")
    ids = [normalise_id(v) for v in accepted_df["id"].to_numpy()]
    labels = ["" if pd.isna(v) else str(v).strip() for v in accepted_df["label"].to_numpy()]
    if any(not i for i in ids) or any(not label for label in labels):
        raise LabelStoreError(f"labels from {source}: blank id or label")
    if len(set(ids)) != len(ids):
        raise LabelStoreError(f"labels from {source}: an id appears more than once")
    return ids, labels


class LabelStore:
    """Append-only, versioned labels in one CSV file (see the module docstring).

    Parameters
    ----------
    path : the CSV file (created on the first append)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _read(self) -> pd.DataFrame:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame({c: pd.Series([], dtype=str) for c in STORE_COLUMNS})
        frame = read_csv_text(self.path)
        missing = [c for c in STORE_COLUMNS if c not in frame.columns]
        if missing:
            raise LabelStoreError(f"{self.path}: not a label store, missing column(s) {missing}")
        return frame

    def append(self, accepted_df: pd.DataFrame, *, round_number: int, source: str, source_sha256: str) -> int:
        """Add ``accepted_df`` (columns ``id``, ``label``) as labels of ``round_number``.

        Returns the number of rows added: 0 when the store already has rows from
        ``source_sha256`` for this round. Raises :class:`LabelStoreError` on missing
        columns, blank ids or labels, or an id given twice.
        """
        ids, labels = validated_labels(accepted_df, source)
        round_text = str(int(round_number))
        with file_lock(self.path):
            history = self._read()
            already = (history["source_sha256"] == source_sha256) & (history["round"] == round_text)
            if bool(already.any()) or not ids:
                return 0
            new = pd.DataFrame(
                {
                    "id": ids,
                    "label": labels,
                    "round": round_text,
                    "source": source,
                    "source_sha256": source_sha256,
                    "labelled_at": utc_now(),
                },
                columns=list(STORE_COLUMNS),
                dtype=str,
            )
            combined = pd.concat([history, new], ignore_index=True) if len(history) else new
            atomic_write_bytes(self.path, frame_csv_bytes(combined))
        return len(new)

    def history(self) -> pd.DataFrame:
        """Every row ever appended, oldest first (``round`` as int64, the rest str)."""
        frame = self._read()
        frame["round"] = frame["round"].astype("int64")
        return frame

    def current(self) -> pd.DataFrame:
        """``id``, ``label``: one row per labelled id, the latest label winning."""
        latest = self._read().drop_duplicates("id", keep="last")
        return latest[["id", "label"]].reset_index(drop=True)

    def training_labels(self, before_round: int | None = None) -> pd.DataFrame:
        """Latest label per id (``id`` int64, ``label`` str) from rounds before ``before_round``.

        ``before_round=n`` keeps labels ingested before round n, so re-running an old
        round sees exactly the labels it saw the first time; None keeps every round.
        """
        history = self.history()
        if before_round is not None:
            history = history[history["round"] < before_round]
        latest = history.drop_duplicates("id", keep="last")
        return pd.DataFrame(
            {"id": latest["id"].astype("int64").to_numpy(), "label": latest["label"].astype(str).to_numpy(dtype=object)}
        )

    def ids(self) -> set[str]:
        """The set of ids that have a label."""
        return set(self._read()["id"].to_numpy())

    def __len__(self) -> int:
        """Number of labelled ids (not of history rows)."""
        return len(self.ids())


class EvaluationSet:
    """The fixed evaluation set: a CSV ``id,label`` written once, never trained on.

    Parameters
    ----------
    path : the CSV file
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> pd.DataFrame:
        """DataFrame (``id`` int64, ``label`` str); empty when there is none yet."""
        if not self.path.exists():
            return pd.DataFrame({"id": np.zeros(0, np.int64), "label": np.zeros(0, object)})
        frame = pd.read_csv(self.path, dtype={"label": str})
        return pd.DataFrame(
            {"id": frame["id"].astype("int64").to_numpy(), "label": frame["label"].to_numpy(dtype=object)}
        )

    def write(self, frame: pd.DataFrame) -> None:
        atomic_write_bytes(self.path, frame[["id", "label"]].to_csv(index=False).encode("utf-8"))
