"""CSV files for people: safe to open in a spreadsheet.

Everything the product writes for a person to open (query sets, escalation and review
lists, rejects) goes through :func:`people_csv_bytes`:

* UTF-8 with a byte-order mark, so Excel detects the encoding; CRLF rows (RFC 4180);
  newlines inside a cell stay inside its quoted cell;
* no cell starts a formula: a cell beginning with ``= + - @``, tab or carriage return
  gets a ``'`` prefix (OWASP's advice against CSV injection), numbers included;
* floats with 4 decimals, booleans as ``true``/``false``, missing values empty.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

import numpy as np
import pandas as pd

#: First characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_formula(cell: str) -> str:
    """``cell`` with a ``'`` prefixed if a spreadsheet would run it as a formula.

    >>> neutralise_formula("=HYPERLINK(1)"), neutralise_formula("fine")
    ("'=HYPERLINK(1)", 'fine')
    """
    return "'" + cell if cell.startswith(FORMULA_TRIGGERS) else cell


def text_cell(value: object, float_digits: int = 4) -> str:
    """One value as the cell text a person sees (see the module docstring)."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else neutralise_formula(f"{value:.{float_digits}f}")
    if isinstance(value, (int, np.integer)):
        return neutralise_formula(str(int(value)))
    return neutralise_formula(str(value))


def people_csv_bytes(frame: pd.DataFrame, columns: Iterable[str] | None = None, header: bool = True) -> bytes:
    """``frame`` (only ``columns`` that it has, in that order; default all) as CSV bytes.

    ``header=False`` gives the rows alone, without byte-order mark or header: for appending
    chunk after chunk to a file started with ``header=True``.
    """
    names = list(frame.columns) if columns is None else [c for c in columns if c in frame.columns]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        writer.writerow([neutralise_formula(str(c)) for c in names])
    for row in frame[names].itertuples(index=False, name=None):
        writer.writerow([text_cell(v) for v in row])
    return buffer.getvalue().encode("utf-8-sig" if header else "utf-8", "backslashreplace")


def count_neutralised(cells: Iterable[object]) -> int:
    """How many of ``cells`` (as text) :func:`neutralise_formula` changes."""
    return sum(1 for c in cells if str(c).startswith(FORMULA_TRIGGERS))
