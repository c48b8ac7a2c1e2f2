"""The human side of the loop: query-set CSVs out, labelled CSVs in, a versioned label store.

Plain Python and pandas (no Airflow). Ids are compared as strings (see :func:`normalise_id`).

* :func:`export_query_set` writes the CSV a labeller opens in a spreadsheet
  (``rank,id,text,model_guess,confidence,label``) and a JSON manifest beside it.
* :func:`read_labelled_file` checks a returned file and splits its rows into accepted,
  skipped (blank label: the item stays in the pool) and rejected (kept whole, with the
  reason). Every non-blank data row lands in exactly one of the three.
* :class:`LabelStore` is the append-only, idempotent store of accepted labels.
* :func:`match_inbox_key` / :func:`inbox_key_glob` recognise the labelled file of a round
  under the names spreadsheets give it on "save as".
"""

from __future__ import annotations

import csv
import difflib
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "QUERY_CSV_COLUMNS",
    "FORMULA_TRIGGERS",
    "STORE_COLUMNS",
    "LabelFileError",
    "LabelledFile",
    "LabelFile",
    "LabelStore",
    "neutralise_formula",
    "normalise_id",
    "query_set_csv_bytes",
    "export_query_set",
    "read_labelled_file",
    "write_rejects",
    "accepted_inbox_names",
    "match_inbox_key",
    "matching_inbox_keys",
    "inbox_key_glob",
    "inbox_key_regex",
]

#: Columns of the query-set CSV a labeller receives, in order.
QUERY_CSV_COLUMNS = ("rank", "id", "text", "model_guess", "confidence", "label")
#: First characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: Columns of the label store CSV.
STORE_COLUMNS = ("id", "label", "round", "source", "source_sha256", "labelled_at")
#: Columns every rejects frame starts with (the row's other cells follow).
REJECT_COLUMNS = ("line", "id", "label", "reason")

_UTF8_BOM = b"\xef\xbb\xbf"
_QUERY_INPUT_COLUMNS = ("id", "text", "predicted_label", "confidence")


class LabelFileError(ValueError):
    """A labelled file cannot be read at all. The message names the file (and line)."""


# --- small shared helpers ----------------------------------------------------------------
def neutralise_formula(cell: str) -> str:
    """``cell`` with a ``'`` prefixed if a spreadsheet would run it as a formula.

    Cells starting with ``= + - @``, tab or carriage return are prefixed (OWASP CSV
    injection advice); every other cell is returned unchanged.
    """
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


_INTEGRAL_FLOAT = re.compile(r"^([+-]?\d+)\.0*$")


def normalise_id(value: object) -> str:
    """An item id as the string ids are compared by.

    Surrounding whitespace and a leading ``'`` (a spreadsheet's text marker) are removed,
    and an integral float as a spreadsheet writes it (``"3353265.0"``, ``3353265.0``)
    becomes ``"3353265"``. Ints give their decimal string.
    """
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    if text.startswith("'"):
        text = text[1:].strip()
    match = _INTEGRAL_FLOAT.match(text)
    return match.group(1) if match else text


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``,
    so readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    # backslashreplace: a cell holding undecodable bytes (lone surrogates) is written as
    # \xNN escapes instead of making the whole write fail.
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8", "backslashreplace")


def _read_csv_str(path: Path) -> pd.DataFrame:
    """A CSV written by this module, every column as str, empty cells as ""."""
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")


# --- export --------------------------------------------------------------------------------
def query_set_csv_bytes(query_df: pd.DataFrame) -> bytes:
    """The query-set CSV for a spreadsheet user, as bytes.

    Args:
        query_df: One row per item, ranked best first, with columns ``id``, ``text``,
            ``predicted_label``, ``confidence`` (others such as ``score``, ``strategy``,
            ``round`` are ignored). Ids must be unique.

    Returns:
        UTF-8 with BOM (so Excel detects the encoding), CRLF rows (RFC 4180), header
        ``rank,id,text,model_guess,confidence,label``; ``rank`` is 1..n in the frame's
        order, ``label`` is empty, formula-like cells are neutralised
        (:func:`neutralise_formula`). Newlines inside a text stay inside its quoted cell.
    """
    missing = [c for c in _QUERY_INPUT_COLUMNS if c not in query_df.columns]
    if missing:
        raise ValueError(f"query set is missing column(s) {missing}; it has {list(query_df.columns)}")
    ids = [normalise_id(v) for v in query_df["id"].to_numpy()]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"query set lists the same id more than once: {repeated[:10]}")

    def text_cell(value: object) -> str:
        return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)

    def confidence_cell(value: object) -> str:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return text_cell(value)
        return "" if np.isnan(number) else f"{number:.4f}"

    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(QUERY_CSV_COLUMNS)
    rows = zip(
        ids,
        query_df["text"].to_numpy(),
        query_df["predicted_label"].to_numpy(),
        query_df["confidence"].to_numpy(),
    )
    for rank, (item_id, text, guess, confidence) in enumerate(rows, start=1):
        writer.writerow(
            [
                rank,
                neutralise_formula(item_id),
                neutralise_formula(text_cell(text)),
                neutralise_formula(text_cell(guess)),
                confidence_cell(confidence),
                "",
            ]
        )
    return buffer.getvalue().encode("utf-8-sig")


def export_query_set(
    query_df: pd.DataFrame,
    csv_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    round_number: int,
    model_version: str | int,
    strategy: str,
    task: str,
) -> dict:
    """Write the query-set CSV (see :func:`query_set_csv_bytes`) and its JSON manifest.

    Both files are written atomically. Returns the manifest dict::

        {"task", "round", "model_version", "strategy", "created_at" (UTC ISO 8601),
         "csv_file" (name), "csv_sha256", "columns",
         "counts": {"items", "neutralised_cells", "by_model_guess": {label: n}},
         "ids": [str, ...]  # the round's query ids, rank order}
    """
    data = query_set_csv_bytes(query_df)
    csv_path, manifest_path = Path(csv_path), Path(manifest_path)
    _atomic_write_bytes(csv_path, data)

    guesses = pd.Series(query_df["predicted_label"].to_numpy(), dtype=str)
    text_cells = [str(v) for v in query_df["text"].to_numpy()] + list(guesses.to_numpy())
    manifest = {
        "task": task,
        "round": int(round_number),
        "model_version": model_version,
        "strategy": strategy,
        "created_at": _utc_now(),
        "csv_file": csv_path.name,
        "csv_sha256": _sha256(data),
        "columns": list(QUERY_CSV_COLUMNS),
        "counts": {
            "items": int(len(query_df)),
            "neutralised_cells": sum(1 for c in text_cells if c.startswith(FORMULA_TRIGGERS)),
            "by_model_guess": {str(k): int(v) for k, v in guesses.value_counts().sort_index().items()},
        },
        "ids": [normalise_id(v) for v in query_df["id"].to_numpy()],
    }
    _atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest


# --- ingest -----------------------------------------------------------------------------------
@dataclass
class LabelledFile:
    """A labelled file split into what is used, what waits, and what is refused.

    Every non-blank data row is in exactly one of ``accepted``, ``skipped``, ``rejects``;
    rows whose cells are all empty are only counted (``blank_rows``), so
    ``len(accepted) + len(skipped) + len(rejects) + blank_rows == data_rows``.

    Attributes:
        accepted: ``id`` (normalised str), ``label`` (the configured spelling); ids unique.
        skipped: ``line``, ``id``: rows whose label cell is blank; the items stay in the pool.
        rejects: ``line``, ``id``, ``label``, ``reason``, then the row's other cells under
            their header names (cells beyond the header as ``extra_1``...): the row kept
            whole as written (undecodable bytes shown as ``\\xNN``). ``line`` is the
            spreadsheet row number (header = 1; a multi-line cell counts as one row).
        source_sha256: SHA-256 of the file's bytes.
        source_name: How the file is named in messages.
        blank_rows: Rows with every cell empty (spreadsheets append these).
        data_rows: Rows after the header.
    """

    accepted: pd.DataFrame
    skipped: pd.DataFrame
    rejects: pd.DataFrame
    source_sha256: str
    source_name: str = ""
    blank_rows: int = 0
    data_rows: int = 0

    def summary(self) -> dict[str, object]:
        """Counts for logs and XCom: source, sha256, rows, accepted, skipped, rejected, blank."""
        return {
            "source": self.source_name,
            "source_sha256": self.source_sha256,
            "rows": self.data_rows,
            "accepted": len(self.accepted),
            "skipped": len(self.skipped),
            "rejected": len(self.rejects),
            "blank": self.blank_rows,
        }


#: Short alias.
LabelFile = LabelledFile


def _has_undecodable(cell: str) -> bool:
    # surrogateescape decoding maps each invalid byte to a lone surrogate U+DC80..U+DCFF
    return any("\udc80" <= ch <= "\udcff" for ch in cell)


def _printable(cell: str) -> str:
    """``cell`` with undecodable bytes written as ``\\xNN`` (safe to print and to store)."""
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _guess_delimiter(header_line: str) -> str:
    """Comma, unless the header has none and uses ``;`` (European Excel) or tab."""
    if "," in header_line:
        return ","
    counts = {d: header_line.count(d) for d in (";", "\t")}
    best = max(counts, key=counts.get)  # type: ignore[arg-type]
    return best if counts[best] else ","


def _header_names(header: list[str], name: str) -> list[str]:
    if any(_has_undecodable(cell) for cell in header):
        raise LabelFileError(
            f"{name}: line 1: the header has bytes that are not valid UTF-8 "
            f"({_printable(','.join(header))!r}); save the file as 'CSV UTF-8'"
        )
    names: list[str] = []
    for position, cell in enumerate(header, start=1):
        clean = cell.replace("\ufeff", "").strip().lower()
        names.append(clean or f"column_{position}")
    return names


@dataclass
class _Row:
    """One non-blank data row of a labelled file while it is being checked."""

    line: int
    cells: list[str]
    raw_id: str
    raw_label: str
    item_id: str | None  # normalised; only set when the id is in the query set
    label: str | None  # configured spelling; None when blank or invalid
    label_key: str | None  # what "same label" compares; None when blank
    problems: list[str]


def read_labelled_file(
    path: str | os.PathLike,
    *,
    query_ids: Iterable[object],
    classes: Iterable[str],
    source_name: str | None = None,
) -> LabelledFile:
    """Check a labelled CSV against the round's query set and the allowed classes.

    Args:
        path: The file as the labeller returned it.
        query_ids: Ids of this round's query set (ints or strings).
        classes: Allowed labels in their configured spelling; a label matches one
            case-insensitively after trimming and is stored in that spelling. Empty:
            any non-blank label is accepted.
        source_name: Name used in messages and results (e.g. the S3 URI); default ``path``.

    Returns:
        A :class:`LabelledFile`. Row rules: a blank label skips the row; an id outside
        ``query_ids``, a label outside ``classes``, bytes that are not UTF-8 or a missing
        id reject it; the same id twice with the same label keeps the first and rejects
        the others as duplicates; the same id with different labels rejects every row of
        that id. A row's ``reason`` lists all its problems, separated by ``"; "``.

    Raises:
        LabelFileError: the file is empty or has only a header; the header lacks ``id`` or
            ``label`` (case-insensitive; BOM and whitespace ignored), repeats one of them,
            or is not UTF-8; the quoting is broken (the line is named).
    """
    path = Path(path)
    name = source_name or str(path)
    raw = path.read_bytes()
    source_sha256 = _sha256(raw)
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LabelFileError(
            f"{name}: line 1: the file is UTF-16 (Excel 'Unicode Text'); "
            "save it as 'CSV UTF-8 (comma delimited)'"
        )
    body = raw[len(_UTF8_BOM):] if raw.startswith(_UTF8_BOM) else raw
    if not body.strip():
        raise LabelFileError(f"{name}: has no rows (the file is empty)")

    text = body.decode("utf-8", "surrogateescape")
    delimiter = _guess_delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[list[str]] = []
    try:
        for record in reader:
            records.append(record)
    except csv.Error as exc:
        raise LabelFileError(
            f"{name}: line {len(records) + 1}: broken CSV quoting ({exc}); "
            f"check the cell quotes on that row"
        ) from exc

    header = _header_names(records[0], name)
    missing = [c for c in ("id", "label") if c not in header]
    if missing:
        raise LabelFileError(
            f"{name}: line 1: the header must have columns 'id' and 'label'; missing "
            f"{', '.join(repr(c) for c in missing)} (found: {', '.join(header)})"
        )
    for column in ("id", "label"):
        if header.count(column) > 1:
            raise LabelFileError(f"{name}: line 1: column {column!r} appears more than once")
    id_at, label_at = header.index("id"), header.index("label")

    data = [(line, rec) for line, rec in enumerate(records[1:], start=2)]
    nonblank = [(line, rec) for line, rec in data if any(cell.strip() for cell in rec)]
    if not nonblank:
        raise LabelFileError(f"{name}: has no rows (only a header{' and blank rows' if data else ''})")

    known_ids = {normalise_id(i) for i in query_ids}
    class_list = [str(c) for c in classes]
    canonical = {c.strip().casefold(): c for c in class_list}

    rows: list[_Row] = []
    for line, record in nonblank:
        cells = record + [""] * (len(header) - len(record))
        raw_id, raw_label = cells[id_at], cells[label_at]
        problems: list[str] = []
        bad_columns = [
            header[i] if i < len(header) else f"extra_{i - len(header) + 1}"
            for i, cell in enumerate(cells)
            if _has_undecodable(cell)
        ]
        if bad_columns:
            problems.append(
                f"bytes that are not valid UTF-8 in column(s) {', '.join(bad_columns)} "
                "(save the file as 'CSV UTF-8')"
            )
        item_id: str | None = None
        if not raw_id.strip():
            problems.append("no id")
        elif not _has_undecodable(raw_id):
            candidate = normalise_id(raw_id)
            if candidate in known_ids:
                item_id = candidate
            else:
                problems.append(f"unknown id {raw_id.strip()!r}: not in this round's query set")
        label: str | None = None
        label_key: str | None = None
        stripped = raw_label.strip()
        if stripped:
            label_key = _printable(stripped).casefold()
            if _has_undecodable(stripped):
                pass  # already reported as undecodable bytes
            elif not class_list:
                label = stripped
            elif stripped.casefold() in canonical:
                label = canonical[stripped.casefold()]
                label_key = label
            else:
                hint = difflib.get_close_matches(stripped, class_list, n=1, cutoff=0.6)
                problems.append(
                    f"label {stripped!r} is not one of [{', '.join(class_list)}]"
                    + (f" (did you mean {hint[0]!r}?)" if hint else "")
                )
        rows.append(_Row(line, cells, raw_id, raw_label, item_id, label, label_key, problems))

    # Rows of the same (known) id decide together: conflict, duplicate, or one keeper.
    by_id: dict[str, list[_Row]] = {}
    for row in rows:
        if row.item_id is not None:
            by_id.setdefault(row.item_id, []).append(row)
    keepers: list[_Row] = []
    for item_id, group in by_id.items():
        distinct = {r.label_key for r in group if r.label_key is not None}
        if len(distinct) > 1:
            seen = ", ".join(
                f"{_printable(r.raw_label.strip())!r} (line {r.line})"
                for r in group
                if r.label_key is not None
            )
            for r in group:
                r.problems.append(f"conflicting labels for id {item_id!r}: {seen}")
            continue
        clean = [r for r in group if not r.problems]
        keeper = next((r for r in clean if r.label_key is not None), None) or next(iter(clean), None)
        if keeper is None:
            continue
        keepers.append(keeper)
        for r in clean:
            if r is keeper:
                continue
            if r.label_key is None and keeper.label_key is not None:
                r.problems.append(
                    f"duplicate of line {keeper.line}: id {item_id!r} is labelled there "
                    "and this row's label is blank"
                )
            else:
                r.problems.append(f"duplicate of line {keeper.line} (same id and label)")

    accepted = [r for r in keepers if r.label is not None and not r.problems]
    skipped = [r for r in keepers if r.label is None and not r.problems]
    rejected = [r for r in rows if r.problems]
    accepted.sort(key=lambda r: r.line)
    skipped.sort(key=lambda r: r.line)

    # Reject frame: the four fixed columns, then every other cell of the row by its header.
    other = [i for i in range(len(header)) if i not in (id_at, label_at)]
    widest = max((len(r.cells) for r in rejected), default=len(header))
    extra_names = [f"extra_{k}" for k in range(1, widest - len(header) + 1)]
    other_names = _dedupe([header[i] for i in other] + extra_names, taken=set(REJECT_COLUMNS))
    reject_records = []
    for r in rejected:
        cells = r.cells + [""] * (widest - len(r.cells))
        record = {
            "line": r.line,
            "id": _printable(r.raw_id),
            "label": _printable(r.raw_label),
            "reason": "; ".join(r.problems),
        }
        values = [cells[i] for i in other] + cells[len(header):]
        record.update({col: _printable(v) for col, v in zip(other_names, values)})
        reject_records.append(record)
    rejects = pd.DataFrame(reject_records, columns=[*REJECT_COLUMNS, *other_names])
    rejects["line"] = rejects["line"].astype("int64")
    for column in rejects.columns[1:]:
        rejects[column] = rejects[column].astype(str)

    return LabelledFile(
        accepted=pd.DataFrame(
            {"id": [r.item_id for r in accepted], "label": [r.label for r in accepted]}, dtype=str
        ),
        skipped=pd.DataFrame(
            {
                "line": pd.Series([r.line for r in skipped], dtype="int64"),
                "id": pd.Series([r.item_id for r in skipped], dtype=str),
            }
        ),
        rejects=rejects,
        source_sha256=source_sha256,
        source_name=name,
        blank_rows=len(data) - len(nonblank),
        data_rows=len(data),
    )


def _dedupe(names: list[str], taken: set[str]) -> list[str]:
    """``names`` made unique (and distinct from ``taken``) by suffixing ``_2``, ``_3``..."""
    out: list[str] = []
    used = set(taken)
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def write_rejects(rejects_df: pd.DataFrame, path: str | os.PathLike, *, source: str | None = None) -> int:
    """Append rejected rows to the CSV at ``path`` (created if absent); returns rows added.

    A ``source`` column (``source``, e.g. the labelled file's S3 URI) is added. Rows
    already in the file are kept; columns are the union of old and new. A new row
    identical to one already there (a retried task) is not written twice. Cells that
    hold undecodable bytes are written as ``\\xNN`` escapes, so no row is ever dropped.
    The write is atomic.
    """
    path = Path(path)
    new = rejects_df.copy()
    if source is not None or "source" not in new.columns:
        new["source"] = source or ""
    new = new.astype(str)
    with _file_lock(path):
        existing = _read_csv_str(path) if path.exists() and path.stat().st_size else None
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
        _atomic_write_bytes(path, _frame_csv_bytes(combined))
    return len(new)


# --- label store ---------------------------------------------------------------------------------
@contextmanager
def _file_lock(path: Path):
    """An exclusive advisory lock on ``<path>.lock`` (serialises writers on one host)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class LabelStore:
    """Append-only, versioned labels in one CSV file.

    Columns ``id,label,round,source,source_sha256,labelled_at`` (all text; ``round`` an
    int in :meth:`history`). Rows are never changed or removed: a new label for an id
    is a new row, and the latest row wins in :meth:`current`.

        >>> store = LabelStore(tmp / "labels.csv")                  # doctest: +SKIP
        >>> store.append(result.accepted, round_number=1, source="s3://b/inbox/t/round-1.csv",
        ...              source_sha256=result.source_sha256)        # doctest: +SKIP
        97
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _read(self) -> pd.DataFrame:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return pd.DataFrame({c: pd.Series([], dtype=str) for c in STORE_COLUMNS})
        frame = _read_csv_str(self.path)
        missing = [c for c in STORE_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{self.path}: not a label store, missing column(s) {missing}")
        return frame

    def append(
        self,
        accepted_df: pd.DataFrame,
        *,
        round_number: int,
        source: str,
        source_sha256: str,
    ) -> int:
        """Add ``accepted_df`` (columns ``id``, ``label``) as labels of ``round_number``.

        Returns the number of rows added. Idempotent: if the store already has rows from
        ``source_sha256`` for this round, nothing is added and 0 is returned, so a
        retried task never counts a file twice. Raises ValueError on missing columns,
        blank ids or labels, or an id given twice.
        """
        missing = [c for c in ("id", "label") if c not in accepted_df.columns]
        if missing:
            raise ValueError(f"labels to append are missing column(s) {missing}")
        ids = [normalise_id(v) for v in accepted_df["id"].to_numpy()]
        labels = ["" if pd.isna(v) else str(v).strip() for v in accepted_df["label"].to_numpy()]
        if any(not i for i in ids) or any(not label for label in labels):
            raise ValueError(f"labels from {source}: blank id or label")
        if len(set(ids)) != len(ids):
            raise ValueError(f"labels from {source}: an id appears more than once")
        round_text = str(int(round_number))
        with _file_lock(self.path):
            history = self._read()
            already = (history["source_sha256"] == source_sha256) & (history["round"] == round_text)
            if bool(already.any()) or not ids:
                return 0
            now = _utc_now()
            new = pd.DataFrame(
                {
                    "id": ids,
                    "label": labels,
                    "round": round_text,
                    "source": source,
                    "source_sha256": source_sha256,
                    "labelled_at": now,
                },
                columns=list(STORE_COLUMNS),
                dtype=str,
            )
            combined = pd.concat([history, new], ignore_index=True) if len(history) else new
            _atomic_write_bytes(self.path, _frame_csv_bytes(combined))
        return len(new)

    def history(self) -> pd.DataFrame:
        """Every row ever appended, oldest first (``round`` as int64, the rest str)."""
        frame = self._read()
        frame["round"] = frame["round"].astype("int64")
        return frame

    def current(self) -> pd.DataFrame:
        """``id``, ``label``: one row per labelled id, the latest label winning."""
        frame = self._read()
        latest = frame.drop_duplicates("id", keep="last")
        return latest[["id", "label"]].reset_index(drop=True)

    def ids(self) -> set[str]:
        """The set of ids that have a label."""
        return set(self._read()["id"].to_numpy())

    def __len__(self) -> int:
        """Number of labelled ids (not of history rows)."""
        return len(self.ids())


# --- inbox naming ---------------------------------------------------------------------------------
def accepted_inbox_names(round_number: int) -> list[str]:
    """Examples of file names accepted as round ``round_number``'s labelled file.

    ``round-<n>.csv`` and what spreadsheets' "save as" makes of it. The rule
    (:func:`match_inbox_key`): case-insensitive, starts with ``round-<n>`` followed by a
    non-digit (so round 1 never takes ``round-10.csv``), ends with ``.csv``.
    """
    n = int(round_number)
    return [
        f"round-{n}.csv",
        f"round-{n} (1).csv",
        f"round-{n}-labelled.csv",
        f"round-{n}_labelled.csv",
        f"Round-{n}.CSV",
        f"round-{n} - Sheet1.csv",
        f"round-{n}.csv.csv",
    ]


def _inbox_name_regex(round_number: int) -> str:
    return rf"round-{int(round_number)}(?!\d)[^/]*\.csv"


def match_inbox_key(key: str, round_number: int) -> bool:
    """True if the S3 key's (or path's) file name is a labelled file of ``round_number``.

    Only the part after the last ``/`` is looked at. Spreadsheet lock files
    (``~$round-1.csv``, ``.~lock.round-1.csv#``) do not match.
    """
    name = str(key).rsplit("/", 1)[-1]
    return re.fullmatch(_inbox_name_regex(round_number), name, flags=re.IGNORECASE) is not None


def matching_inbox_keys(keys: Iterable[str], round_number: int) -> list[str]:
    """The keys among ``keys`` that :func:`match_inbox_key` accepts, in the given order."""
    return [k for k in keys if match_inbox_key(k, round_number)]


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def inbox_key_glob(round_number: int, prefix: str = "") -> str:
    """Pattern for Airflow's ``S3KeySensor(bucket_key=..., wildcard_match=True)``.

    The naive ``prefix + "round-<n>*"`` would also fire on ``round-10.csv`` while round 1
    is awaited and would miss ``Round-1.CSV`` (fnmatch is case-sensitive on Linux), so
    this returns ``prefix + "[Rr][Oo][Uu][Nn][Dd]-<n>[!0-9]*[Cc][Ss][Vv]"``. The sensor
    lists keys under the text before the first ``[`` (i.e. ``prefix``) and fnmatches each
    key. fnmatch cannot express "not followed by a digit" without consuming a character,
    so the pattern is slightly wider than :func:`match_inbox_key` (it also takes e.g.
    ``round-1xcsv`` or names in sub-folders); pick the key afterwards with
    :func:`matching_inbox_keys`, or sense with :func:`inbox_key_regex` instead.
    ``prefix`` is used verbatim (e.g. ``"inbox/product_group/"``).
    """
    return f"{prefix}{_any_case('round')}-{int(round_number)}[!0-9]*{_any_case('csv')}"


def inbox_key_regex(round_number: int, prefix: str = "") -> str:
    """Exact equivalent of :func:`match_inbox_key` for ``S3KeySensor(use_regex=True)``
    (``re.match`` on the whole key; ``prefix`` is matched literally and case-sensitively)."""
    return f"{re.escape(prefix)}(?i:{_inbox_name_regex(round_number)})$"
