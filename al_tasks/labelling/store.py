"""The label store: append-only, versioned, idempotent labels of a task.

Every accepted label is a row ``id, label, round, source, source_sha256, labelled_at``.
Rows are never changed or removed: a new label for an id is a new row and the latest
row wins. The guarantees every backend keeps:

* **idempotent per file**: appending a file (by its SHA-256) that was already appended
  for the same round adds nothing, so a retried ingest never counts a file twice;
* **no empty history**: a row that repeats the id's current label *for the same round*
  adds nothing, so a re-encoded "save as" copy of the same answers (other bytes, same
  labels) adds no history rows (:func:`rows_to_append`);
* **nothing lost**: appends are transactions serialised per task, so two ingests of
  different files running at once both land.

The seed is round 0; the answers to round *n*'s query set are round *n*, so round *n*
trains on rounds ``< n`` only.

:class:`LabelStore` is the interface. Its backends: :class:`~al_tasks.labelling.store_sql.SqlLabelStore`
(SQLite, the embedded default, or PostgreSQL, through SQLAlchemy) and
:class:`CsvLabelStore`, the CSV-with-a-file-lock store of earlier versions, kept to read
(and migrate) existing workspaces.
"""

from __future__ import annotations

import abc
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.errors import LabelStoreError
from al_tasks.io.atomic import atomic_write_bytes, file_lock
from al_tasks.io.people_csv import people_csv_bytes
from al_tasks.labelling.ids import normalise_id

#: Columns of the label store.
STORE_COLUMNS = ("id", "label", "round", "source", "source_sha256", "labelled_at")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_csv_text(path: Path) -> pd.DataFrame:
    """A CSV written by the product, every column as str, empty cells as ""."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


def frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    # backslashreplace: a cell holding undecodable bytes (lone surrogates) is written as
    # escapes instead of making the whole write fail.
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8", "backslashreplace")


def empty_history() -> pd.DataFrame:
    """A history frame with no rows (every column str)."""
    return pd.DataFrame({c: pd.Series([], dtype=str) for c in STORE_COLUMNS})


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


def rows_to_append(
    current: dict[str, tuple[str, int]], ids: list[str], labels: list[str], round_number: int
) -> tuple[list[str], list[str]]:
    """The (ids, labels) that add history: not a repeat of the id's current label in this round.

    Parameters
    ----------
    current : id -> (label, round) of the id's latest row in the store
    ids, labels : the validated rows to append (same length)
    round_number : the round they are labels of

    >>> rows_to_append({"1": ("a", 1), "2": ("a", 0)}, ["1", "2", "3"], ["a", "a", "b"], 1)
    (['2', '3'], ['a', 'b'])
    """
    kept = [(i, label) for i, label in zip(ids, labels, strict=True) if current.get(i) != (label, int(round_number))]
    return [i for i, _ in kept], [label for _, label in kept]


def latest_of(history: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """Map each id to (label, round) of its latest row in ``history`` (oldest first)."""
    latest = history.drop_duplicates("id", keep="last")
    return dict(
        zip(latest["id"], zip(latest["label"], latest["round"].astype("int64").tolist(), strict=True), strict=True)
    )


def new_rows(ids: list[str], labels: list[str], round_number: int, source: str, source_sha256: str) -> pd.DataFrame:
    """The store rows (every column str) of one append."""
    return pd.DataFrame(
        {
            "id": ids,
            "label": labels,
            "round": str(int(round_number)),
            "source": source,
            "source_sha256": source_sha256,
            "labelled_at": utc_now(),
        },
        columns=list(STORE_COLUMNS),
        dtype=str,
    )


class LabelStore(abc.ABC):
    """The interface of a task's label store (see the module docstring).

    A backend implements :meth:`append` and :meth:`history`; the views of the labels
    (:meth:`current`, :meth:`training_labels`, :meth:`ids`) follow from the history.
    """

    #: Where the labels are, for messages (a path, or a URL with its password masked).
    location: str

    @abc.abstractmethod
    def append(self, accepted_df: pd.DataFrame, *, round_number: int, source: str, source_sha256: str) -> int:
        """Add ``accepted_df`` (columns ``id``, ``label``) as labels of ``round_number``.

        Returns the number of rows added: 0 when ``source_sha256`` was already appended
        for this round; rows repeating their id's current label of this round are not
        added. Raises :class:`LabelStoreError` on missing columns, blank ids or labels,
        or an id given twice.
        """

    @abc.abstractmethod
    def history(self) -> pd.DataFrame:
        """Every row ever appended, oldest first (``round`` as int64, the rest str)."""

    def current(self) -> pd.DataFrame:
        """``id``, ``label``: one row per labelled id, the latest label winning."""
        return self.current_rows()[["id", "label"]]

    def current_rows(self) -> pd.DataFrame:
        """The latest row of every labelled id (every store column), in history order."""
        return self.history().drop_duplicates("id", keep="last").reset_index(drop=True)

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
        return set(self.history()["id"].to_numpy())

    def __len__(self) -> int:
        """Number of labelled ids (not of history rows)."""
        return len(self.ids())

    def export_csv(self, path: str | os.PathLike, *, history: bool = False) -> int:
        """Write the current labels (``history=True``: every row) as a CSV for people.

        Spreadsheet-safe (:func:`~al_tasks.io.people_csv.people_csv_bytes`), written
        atomically; returns the number of rows written.
        """
        frame = self.history() if history else self.current_rows()
        atomic_write_bytes(path, people_csv_bytes(frame, STORE_COLUMNS))
        return len(frame)


class CsvLabelStore(LabelStore):
    """Labels in one CSV file with a file lock: the store of earlier versions.

    Kept so existing workspaces can be read and migrated (``al labels migrate``); a file
    lock serialises writers on one host only, so a team's deployment uses a database.

    Parameters
    ----------
    path : the CSV file (created on the first append)
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.location = str(self.path)

    def _read(self) -> pd.DataFrame:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return empty_history()
        frame = read_csv_text(self.path)
        missing = [c for c in STORE_COLUMNS if c not in frame.columns]
        if missing:
            raise LabelStoreError(f"{self.path}: not a label store, missing column(s) {missing}")
        return frame[list(STORE_COLUMNS)]

    def append(self, accepted_df: pd.DataFrame, *, round_number: int, source: str, source_sha256: str) -> int:
        ids, labels = validated_labels(accepted_df, source)
        round_text = str(int(round_number))
        with file_lock(self.path):
            history = self._read()
            already = (history["source_sha256"] == source_sha256) & (history["round"] == round_text)
            if bool(already.any()):
                return 0
            ids, labels = rows_to_append(latest_of(history), ids, labels, round_number)
            if not ids:
                return 0
            new = new_rows(ids, labels, round_number, source, source_sha256)
            combined = pd.concat([history, new], ignore_index=True) if len(history) else new
            atomic_write_bytes(self.path, frame_csv_bytes(combined))
        return len(new)

    def history(self) -> pd.DataFrame:
        frame = self._read()
        frame["round"] = frame["round"].astype("int64")
        return frame


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
