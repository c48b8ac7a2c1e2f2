"""Labelled files in: parse, check, resolve duplicates, assemble; every row accounted for.

:func:`read_labelled_file` runs four steps, each a function of its own:

1. :func:`parse_table` -- records streamed from a CSV (:func:`csv_records`: encoding,
   delimiter, quoting) or an .xlsx's first sheet (:func:`workbook_records`) to a header
   and data rows, within the size and row limits;
   a file that cannot be read at all raises :class:`~al_tasks.errors.LabelFileError`
   naming the file, the line and the problem;
2. :func:`check_rows` -- each row against the round's query ids and the classes;
3. :func:`resolve_duplicates` -- rows of the same id decide together (duplicate,
   conflict, or one keeper);
4. :func:`assemble` -- accepted, skipped (blank label) and rejected rows; a rejected row
   is kept whole, with its line and reason.

Every non-blank data row lands in exactly one of accepted, skipped and rejected.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import io
import itertools
import os
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from al_tasks.errors import LabelFileError
from al_tasks.labelling.ids import normalise_id

#: Columns every rejects frame starts with (the row's other cells follow).
REJECT_COLUMNS = ("line", "id", "label", "reason")
#: A number as a spreadsheet shows a long one: ``9.82274E+08``.
_SCIENTIFIC = re.compile(r"[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+")


@dataclass
class LabelledFile:
    """A labelled file split into what is used, what waits, and what is refused.

    ``len(accepted) + len(skipped) + len(rejects) + blank_rows == data_rows``.

    Attributes
    ----------
    accepted : DataFrame ``id`` (normalised str), ``label`` (the configured spelling); ids unique
    skipped : DataFrame ``line``, ``id``: rows whose label cell is blank (the items stay in the pool)
    rejects : DataFrame ``line``, ``id``, ``label``, ``reason``, then the row's other cells
        under their header names (``extra_1``... beyond the header), undecodable bytes as
        ``\\xNN``; ``line`` is the spreadsheet row number (header = 1)
    source_sha256 : SHA-256 of the file's bytes
    source_name : how the file is named in messages
    blank_rows : rows with every cell empty (spreadsheets append these)
    data_rows : rows after the header
    warnings : notes about the file that cost no label (e.g. bad bytes in an ignored column)
    """

    accepted: pd.DataFrame
    skipped: pd.DataFrame
    rejects: pd.DataFrame
    source_sha256: str
    source_name: str = ""
    blank_rows: int = 0
    data_rows: int = 0
    warnings: list[str] = field(default_factory=list)

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
            "warnings": list(self.warnings),
        }


@dataclass
class Table:
    """A parsed labelled file: normalised header names and the data records by line."""

    name: str
    header: list[str]
    records: list[tuple[int, list[str]]]  # (spreadsheet line, cells), blank rows included
    id_at: int
    label_at: int

    @property
    def nonblank(self) -> list[tuple[int, list[str]]]:
        return [(line, cells) for line, cells in self.records if any(c.strip() for c in cells)]


@dataclass
class Row:
    """One non-blank data row while it is being checked."""

    line: int
    cells: list[str]
    raw_id: str
    raw_label: str
    item_id: str | None = None  # normalised; only set when the id is in the query set
    label: str | None = None  # configured spelling; None when blank or invalid
    label_key: str | None = None  # what "same label" compares; None when blank
    problems: list[str] = field(default_factory=list)


def has_undecodable(cell: str) -> bool:
    """True if ``cell`` holds bytes that were not UTF-8 (surrogateescape decoding)."""
    return any("\udc80" <= ch <= "\udcff" for ch in cell)


def printable(cell: str) -> str:
    """``cell`` with undecodable bytes written as ``\\xNN`` (safe to print and to store)."""
    return cell.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --- 1. parse --------------------------------------------------------------------------------
#: First bytes of a zip archive (an .xlsx workbook is one) and of an old binary .xls workbook.
_ZIP_MAGIC, _OLE_MAGIC = b"PK\x03\x04", b"\xd0\xcf\x11\xe0"
_WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
#: Unpacked size of a workbook per byte of its limit (an .xlsx packs about 5-10x).
_WORKBOOK_UNPACKED_RATIO = 20
_MAX_MESSAGE_CELL = 60


def short(text: str, limit: int = _MAX_MESSAGE_CELL) -> str:
    """``text`` made printable and cut to ``limit`` characters, for messages."""
    text = printable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_size(path: Path, name: str, max_bytes: int | None) -> None:
    """Refuse a file larger than ``max_bytes`` before reading any of it."""
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise LabelFileError(
            f"{name}: the file is {size / 1e6:.1f} MB, over the limit of {max_bytes / 1e6:g} MB "
            "(setting max_label_file_mb); it was not read. A labelled query set is far smaller: "
            "check that this is the right file, or raise the limit"
        )


def file_kind(path: Path, name: str) -> str:
    """``"xlsx"`` or ``"csv"``, by the file's first bytes (its name may lie)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(_ZIP_MAGIC):
        if name.lower().endswith(_WORKBOOK_SUFFIXES) or path.name.lower().endswith(_WORKBOOK_SUFFIXES):
            return "xlsx"
        raise LabelFileError(
            f"{name}: line 1: this is an Excel workbook (.xlsx) saved under a {Path(name).suffix or 'CSV'} name, "
            "not a CSV; save it as 'CSV UTF-8 (comma delimited)', or drop the workbook itself as round-<n>.xlsx"
        )
    if head.startswith(_OLE_MAGIC):
        raise LabelFileError(
            f"{name}: line 1: this is an old-format Excel workbook (.xls), not a CSV; "
            "save it as 'CSV UTF-8 (comma delimited)' or as an .xlsx workbook"
        )
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise LabelFileError(
            f"{name}: line 1: the file is UTF-16 (Excel 'Unicode Text'); save it as 'CSV UTF-8 (comma delimited)'"
        )
    return "csv"


def csv_records(path: Path, name: str) -> Iterator[list[str]]:
    """The CSV's records one at a time (UTF-8, BOM dropped, bad bytes kept as surrogates)."""
    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        first = text.readline()
        reader = csv.reader(itertools.chain([first], text), delimiter=_guess_delimiter(first), strict=True)
        count = 0
        try:
            for record in reader:
                count += 1
                yield record
        except csv.Error as exc:
            raise LabelFileError(
                f"{name}: line {count + 1}: broken CSV quoting ({short(str(exc))}); check the cell quotes on that row"
            ) from None


def workbook_records(path: Path, name: str, max_bytes: int | None) -> Iterator[list[str]]:
    """The rows of an .xlsx workbook's first sheet as text cells, one at a time."""
    from openpyxl import load_workbook

    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        workbook = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise LabelFileError(
            f"{name}: line 1: the workbook cannot be opened ({short(str(exc))}); "
            "save it again as .xlsx, or as 'CSV UTF-8 (comma delimited)'"
        ) from None
    if max_bytes is not None and unpacked > _WORKBOOK_UNPACKED_RATIO * max_bytes:
        workbook.close()
        raise LabelFileError(
            f"{name}: the workbook unpacks to {unpacked / 1e6:.0f} MB, over {_WORKBOOK_UNPACKED_RATIO} x "
            "the limit (setting max_label_file_mb); it was not read"
        )
    try:
        line = 0
        for row in workbook.worksheets[0].iter_rows():
            cells = [c for c in row if getattr(c, "row", None)]
            at = cells[0].row if cells else line + 1
            while line + 1 < at:  # rows the sheet leaves out are empty
                line += 1
                yield []
            line = at
            yield [workbook_cell_text(c.value) for c in row]
    finally:
        workbook.close()


def workbook_cell_text(value: object) -> str:
    """A workbook cell's value as the text a CSV of it would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else format(value, ".15g")
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def parse_table(records: Iterable[list[str]], name: str, max_rows: int | None = None) -> Table:
    """Header and data records of a labelled file; raises :class:`LabelFileError` if it
    cannot be read, has NUL bytes, or has more than ``max_rows`` data rows.
    """
    rows: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    for line, record in enumerate(records, start=1):
        if any("\x00" in cell for cell in record):
            raise LabelFileError(
                f"{name}: line {line}: the file has NUL bytes (\\x00), so it is not a plain-text CSV "
                "(a damaged or binary file); open it in the spreadsheet and save it as 'CSV UTF-8 (comma delimited)'"
            )
        if header is None:
            header = record
        elif max_rows is not None and line - 1 > max_rows:
            raise LabelFileError(
                f"{name}: line {line}: more than {max_rows} data rows (setting max_label_file_rows); "
                "the rest was not read. Check that this is the round's labelled query set, or raise the limit"
            )
        else:
            rows.append((line, record))
    if header is None or (not any(cell.strip() for cell in header) and not rows):
        raise LabelFileError(f"{name}: has no rows (the file is empty)")
    names = _header_names(header)
    id_at, label_at = _key_columns(names, header, name)
    table = Table(name, names, rows, id_at, label_at)
    if not table.nonblank:
        blank = " and blank rows" if table.records else ""
        raise LabelFileError(f"{name}: has no rows (only a header{blank})")
    return table


def _guess_delimiter(header_line: str) -> str:
    """Comma, unless the header has none and uses ``;`` (European Excel) or tab."""
    if "," in header_line:
        return ","
    counts = {d: header_line.count(d) for d in (";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _header_names(header: list[str]) -> list[str]:
    return [
        printable(cell).replace("\ufeff", "").strip().lower() or f"column_{position}"
        for position, cell in enumerate(header, start=1)
    ]


def _key_columns(header: list[str], raw_header: list[str], name: str) -> tuple[int, int]:
    missing = [c for c in ("id", "label") if c not in header]
    if missing:
        hint = (
            "; the header has bytes that are not valid UTF-8: save the file as 'CSV UTF-8'"
            if any(has_undecodable(cell) for cell in raw_header)
            else ""
        )
        raise LabelFileError(
            f"{name}: line 1: the header must have columns 'id' and 'label'; missing "
            f"{', '.join(repr(c) for c in missing)} (found: {short(', '.join(header), 120)}){hint}"
        )
    for column in ("id", "label"):
        if header.count(column) > 1:
            raise LabelFileError(f"{name}: line 1: column {column!r} appears more than once")
    return header.index("id"), header.index("label")


def encoding_warnings(table: Table) -> list[str]:
    """Notes on bytes that are not UTF-8 in columns the ingest ignores (they cost no label)."""
    keys = {table.id_at, table.label_at}
    lines_by_column: dict[str, list[int]] = {}
    for line, record in table.records:
        for at, cell in enumerate(record):
            if at not in keys and has_undecodable(cell):
                column = table.header[at] if at < len(table.header) else f"extra_{at - len(table.header) + 1}"
                lines_by_column.setdefault(column, []).append(line)
    return [
        f"{table.name}: column {column!r} has bytes that are not valid UTF-8 on {len(lines)} row(s) "
        f"(first at line {lines[0]}); the column is not used, so no label is lost; save the file as 'CSV UTF-8'"
        for column, lines in lines_by_column.items()
    ]


# --- 2. check ---------------------------------------------------------------------------------
def check_rows(table: Table, query_ids: Iterable[object], classes: Iterable[str]) -> list[Row]:
    """One :class:`Row` per non-blank record, with every problem of the row alone listed."""
    known_ids = {normalise_id(i) for i in query_ids}
    class_list = [str(c) for c in classes]
    canonical = {c.strip().casefold(): c for c in class_list}
    rows = []
    for line, record in table.nonblank:
        cells = record + [""] * (len(table.header) - len(record))
        row = Row(line, cells, cells[table.id_at], cells[table.label_at])
        bad_columns = [table.header[i] for i in (table.id_at, table.label_at) if has_undecodable(cells[i])]
        if bad_columns:
            row.problems.append(
                f"bytes that are not valid UTF-8 in column(s) {', '.join(bad_columns)} (save the file as 'CSV UTF-8')"
            )
        _check_id(row, known_ids)
        _check_label(row, class_list, canonical)
        rows.append(row)
    return rows


def _check_id(row: Row, known_ids: set[str]) -> None:
    if not row.raw_id.strip():
        row.problems.append("no id")
    elif not has_undecodable(row.raw_id):
        candidate = normalise_id(row.raw_id)
        if candidate in known_ids:
            row.item_id = candidate
        elif _SCIENTIFIC.fullmatch(row.raw_id.strip()):
            row.problems.append(
                f"id {short(row.raw_id.strip())!r} is a number in scientific notation: the spreadsheet turned "
                "the id into a number and dropped digits; format the id column as text (or use the .xlsx "
                "query set) and copy the ids from the query set again"
            )
        else:
            row.problems.append(f"unknown id {short(row.raw_id.strip())!r}: not in this round's query set")


def _check_label(row: Row, class_list: list[str], canonical: dict[str, str]) -> None:
    stripped = row.raw_label.strip()
    if not stripped:
        return
    row.label_key = printable(stripped).casefold()
    if has_undecodable(stripped):
        return  # already reported as undecodable bytes
    if not class_list:
        row.label = stripped
    elif stripped.casefold() in canonical:
        row.label = row.label_key = canonical[stripped.casefold()]
    else:
        hint = difflib.get_close_matches(stripped, class_list, n=1, cutoff=0.6)
        row.problems.append(
            f"label {short(stripped)!r} is not one of [{', '.join(class_list)}]"
            + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )


# --- 3. duplicates ----------------------------------------------------------------------------
def resolve_duplicates(rows: list[Row]) -> list[Row]:
    """Rows of the same known id decide together; returns the keepers (one per id).

    The same id with different labels rejects every row of that id; the same id with
    the same label keeps the first labelled row and rejects the others as duplicates.
    """
    by_id: dict[str, list[Row]] = {}
    for row in rows:
        if row.item_id is not None:
            by_id.setdefault(row.item_id, []).append(row)
    keepers: list[Row] = []
    for item_id, group in by_id.items():
        if len({r.label_key for r in group if r.label_key is not None}) > 1:
            seen = ", ".join(
                f"{printable(r.raw_label.strip())!r} (line {r.line})" for r in group if r.label_key is not None
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
                    f"duplicate of line {keeper.line}: id {item_id!r} is labelled there and this row's label is blank"
                )
            else:
                r.problems.append(f"duplicate of line {keeper.line} (same id and label)")
    return keepers


# --- 4. assemble ------------------------------------------------------------------------------
def reject_frame(table: Table, rejected: list[Row]) -> pd.DataFrame:
    """The rejected rows whole: :data:`REJECT_COLUMNS`, then every other cell by its header."""
    header = table.header
    other = [i for i in range(len(header)) if i not in (table.id_at, table.label_at)]
    widest = max((len(r.cells) for r in rejected), default=len(header))
    extra_names = [f"extra_{k}" for k in range(1, widest - len(header) + 1)]
    other_names = _dedupe([header[i] for i in other] + extra_names, taken=set(REJECT_COLUMNS))
    records = []
    for r in rejected:
        cells = r.cells + [""] * (widest - len(r.cells))
        record = {
            "line": r.line,
            "id": printable(r.raw_id),
            "label": printable(r.raw_label),
            "reason": "; ".join(r.problems),
        }
        values = [cells[i] for i in other] + cells[len(header) :]
        record.update({col: printable(v) for col, v in zip(other_names, values)})
        records.append(record)
    frame = pd.DataFrame(records, columns=[*REJECT_COLUMNS, *other_names])
    frame["line"] = frame["line"].astype("int64")
    for column in frame.columns[1:]:
        frame[column] = frame[column].astype(str)
    return frame


def assemble(
    table: Table, rows: list[Row], keepers: list[Row], source_sha256: str, warnings: list[str] | None = None
) -> LabelledFile:
    """The :class:`LabelledFile` of checked rows and their keepers."""
    accepted = sorted((r for r in keepers if r.label is not None and not r.problems), key=lambda r: r.line)
    skipped = sorted((r for r in keepers if r.label is None and not r.problems), key=lambda r: r.line)
    return LabelledFile(
        accepted=pd.DataFrame({"id": [r.item_id for r in accepted], "label": [r.label for r in accepted]}, dtype=str),
        skipped=pd.DataFrame(
            {
                "line": pd.Series([r.line for r in skipped], dtype="int64"),
                "id": pd.Series([r.item_id for r in skipped], dtype=str),
            }
        ),
        rejects=reject_frame(table, [r for r in rows if r.problems]),
        source_sha256=source_sha256,
        source_name=table.name,
        blank_rows=len(table.records) - len(table.nonblank),
        data_rows=len(table.records),
        warnings=list(warnings or []),
    )


def read_labelled_file(
    path: str | os.PathLike,
    *,
    query_ids: Iterable[object],
    classes: Iterable[str],
    source_name: str | None = None,
    max_bytes: int | None = None,
    max_rows: int | None = None,
) -> LabelledFile:
    """Check a labelled file (CSV, or an .xlsx workbook's first sheet) against the round's
    query set and the allowed classes.

    Parameters
    ----------
    path : the file as the labeller returned it; what it is (CSV or workbook) is told by
        its first bytes, not its name
    query_ids : ids of this round's query set (ints or strings)
    classes : allowed labels in their configured spelling; a label matches one
        case-insensitively after trimming and is stored in that spelling. Empty: any
        non-blank label is accepted.
    source_name : name used in messages and results (e.g. the S3 URI); default ``path``
    max_bytes : refuse a larger file before reading it (None: no limit)
    max_rows : refuse a file with more data rows, without reading the rest (None: no limit)

    Returns
    -------
    LabelledFile. A blank label skips the row; an id outside ``query_ids``, a label
    outside ``classes``, bytes that are not UTF-8 in the id or label or a missing id
    reject it (bad bytes in other columns only add a warning); duplicates and conflicts
    as in :func:`resolve_duplicates`. A row's ``reason`` lists all its problems,
    separated by ``"; "``.

    Raises
    ------
    LabelFileError
        the file is over a limit, empty or has only a header; the header lacks ``id`` or
        ``label`` or repeats one; it is UTF-16, an .xls, a workbook under a CSV name, has
        NUL bytes or broken quoting (the line is named).
    """
    path = Path(path)
    name = source_name or str(path)
    check_size(path, name, max_bytes)
    if file_kind(path, name) == "xlsx":
        records = workbook_records(path, name, max_bytes)
    else:
        records = csv_records(path, name)
    table = parse_table(records, name, max_rows)
    rows = check_rows(table, query_ids, classes)
    keepers = resolve_duplicates(rows)
    with open(path, "rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    return assemble(table, rows, keepers, sha256, encoding_warnings(table))


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
