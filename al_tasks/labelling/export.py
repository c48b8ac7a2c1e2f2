"""Query sets out: the CSV and the .xlsx workbook a labeller opens, and their manifest.

The workbook (``round-<n>.xlsx`` next to ``round-<n>.csv``) is the same table made for
spreadsheets: ids are text cells (no spreadsheet turns them into ``9.82274E+08``), the
label column has a drop-down list of the allowed classes, the text column is wrapped,
and every text cell is a string cell, never a formula (a narrative starting with ``=``
stays text). It is written with openpyxl.
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

from al_tasks.io.atomic import atomic_write_bytes
from al_tasks.io.people_csv import FORMULA_TRIGGERS, count_neutralised, people_csv_bytes
from al_tasks.labelling.ids import normalise_id

#: Columns of the query-set CSV a labeller receives, in order.
QUERY_CSV_COLUMNS = ("rank", "id", "text", "model_guess", "confidence", "label")
_QUERY_INPUT_COLUMNS = ("id", "text", "predicted_label", "confidence")


def query_set_frame(query_df: pd.DataFrame) -> pd.DataFrame:
    """The query set as the labeller sees it: columns :data:`QUERY_CSV_COLUMNS`.

    Parameters
    ----------
    query_df : DataFrame, one row per item, ranked best first, with columns ``id``,
        ``text``, ``predicted_label``, ``confidence`` (others are ignored); ids unique

    Returns
    -------
    DataFrame of str cells (``confidence`` a float), ``rank`` 1..n, ``label`` empty
    """
    missing = [c for c in _QUERY_INPUT_COLUMNS if c not in query_df.columns]
    if missing:
        raise ValueError(f"query set is missing column(s) {missing}; it has {list(query_df.columns)}")
    ids = [normalise_id(v) for v in query_df["id"].to_numpy()]
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise ValueError(f"query set lists the same id more than once: {repeated[:10]}")
    texts = ["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in query_df["text"]]
    return pd.DataFrame(
        {
            "rank": np.arange(1, len(ids) + 1),
            "id": ids,
            "text": texts,
            "model_guess": [str(v) for v in query_df["predicted_label"].to_numpy()],
            "confidence": pd.to_numeric(query_df["confidence"], errors="coerce").to_numpy(dtype=float),
            "label": "",
        },
        columns=list(QUERY_CSV_COLUMNS),
    )


def query_set_csv_bytes(query_df: pd.DataFrame) -> bytes:
    """The query-set CSV (see :mod:`al_tasks.io.people_csv`: BOM, CRLF, formula-safe)."""
    return people_csv_bytes(query_set_frame(query_df))


def query_set_xlsx_bytes(frame: pd.DataFrame, classes: Iterable[str] = ()) -> bytes:
    """The query set (:func:`query_set_frame`) as an .xlsx workbook (see the module docstring).

    The first sheet is the query set; the allowed ``classes`` (if any) are listed on a
    hidden second sheet that the label column's drop-down list refers to.
    """
    from openpyxl import Workbook
    from openpyxl.utils import get_column_letter

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "query set"
    columns = list(frame.columns)
    sheet.append(columns)
    for values in frame.itertuples(index=False, name=None):
        sheet.append([_xlsx_value(column, value) for column, value in zip(columns, values)])
    _format_query_sheet(sheet, columns, len(frame))
    class_list = [str(c) for c in classes]
    if class_list and "label" in columns:
        _add_label_dropdown(workbook, sheet, get_column_letter(columns.index("label") + 1), class_list, len(frame))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _xlsx_value(column: str, value: object) -> object:
    """A cell value for the workbook: numbers stay numbers (rank, confidence), the rest text."""
    if column in ("rank", "confidence"):
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value
    return ILLEGAL_CHARACTERS_RE.sub("\ufffd", "" if value is None else str(value))


def _format_query_sheet(sheet, columns: list[str], rows: int) -> None:
    """Widths, wrapping, the header row frozen; text cells as string cells, ids formatted as text."""
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    widths = {"rank": 6, "id": 14, "text": 90, "model_guess": 18, "confidence": 11, "label": 20}
    for at, column in enumerate(columns, start=1):
        sheet.column_dimensions[get_column_letter(at)].width = widths.get(column, 16)
        sheet.cell(row=1, column=at).font = Font(bold=True)
    sheet.freeze_panes = "A2"
    for row in sheet.iter_rows(min_row=1, max_row=rows + 1):
        for cell, column in zip(row, columns):
            if isinstance(cell.value, str):
                # A string starting with "=" would be stored as a formula: keep it a string.
                cell.data_type = "s"
                if cell.value.startswith(FORMULA_TRIGGERS):
                    cell.quotePrefix = True
            if column in ("id", "label", "model_guess"):
                cell.number_format = "@"
            if column == "text":
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            elif cell.row > 1:
                cell.alignment = Alignment(vertical="top")


def _add_label_dropdown(workbook, sheet, label_letter: str, classes: list[str], rows: int) -> None:
    """A list validation of the label cells against the classes on a hidden sheet."""
    from openpyxl.worksheet.datavalidation import DataValidation

    lists = workbook.create_sheet("classes")
    for at, name in enumerate(classes, start=1):
        lists.cell(row=at, column=1, value=name).data_type = "s"
    lists.sheet_state = "hidden"
    validation = DataValidation(
        type="list",
        formula1=f"=classes!$A$1:$A${len(classes)}",
        allow_blank=True,
        showErrorMessage=True,
        errorTitle="Not a class",
        error="Pick one of the classes from the list, or leave the cell blank to skip the item.",
    )
    sheet.add_data_validation(validation)
    validation.add(f"{label_letter}2:{label_letter}{max(rows, 1) + 1}")


def export_query_set(
    query_df: pd.DataFrame,
    csv_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    *,
    round_number: int,
    model_version: str | int,
    strategy: str,
    task: str,
    classes: Iterable[str] = (),
) -> dict:
    """Write the query-set CSV, the same as an .xlsx workbook next to it (``.xlsx``
    suffix; the label column offers ``classes``), and the JSON manifest, all atomically.

    Returns the manifest::

        {"task", "round", "model_version", "strategy", "created_at" (UTC ISO 8601),
         "csv_file" (name), "csv_sha256", "xlsx_file" (name), "columns",
         "counts": {"items", "neutralised_cells", "by_model_guess": {label: n}},
         "ids": [str, ...]  # the round's query ids, rank order}
    """
    import hashlib

    frame = query_set_frame(query_df)
    data = people_csv_bytes(frame)
    csv_path, manifest_path = Path(csv_path), Path(manifest_path)
    atomic_write_bytes(csv_path, data)
    xlsx_path = csv_path.with_suffix(".xlsx")
    atomic_write_bytes(xlsx_path, query_set_xlsx_bytes(frame, classes))
    manifest = {
        "task": task,
        "round": int(round_number),
        "model_version": model_version,
        "strategy": strategy,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "csv_file": csv_path.name,
        "csv_sha256": hashlib.sha256(data).hexdigest(),
        "xlsx_file": xlsx_path.name,
        "columns": list(QUERY_CSV_COLUMNS),
        "counts": {
            "items": int(len(frame)),
            "neutralised_cells": count_neutralised([*frame["text"], *frame["model_guess"]]),
            "by_model_guess": {str(k): int(v) for k, v in frame["model_guess"].value_counts().sort_index().items()},
        },
        "ids": list(frame["id"]),
    }
    atomic_write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return manifest
