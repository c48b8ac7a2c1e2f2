"""Every CSV the product writes for people is formula-safe.

Query sets, the rejects (workspace log and bucket copy), and the escalation and review
lists all go through :func:`al_tasks.io.people_csv.people_csv_bytes`; a CSV written any
other way must be one of the machine files listed here. The rejects are also checked
end to end in ``tests/integration/test_ingest_s3.py`` and ``tests/unit/test_label_files.py``.
"""

from __future__ import annotations

import ast
import csv
import io

import pandas as pd

from al_tasks.config import REPO_ROOT
from al_tasks.io.people_csv import FORMULA_TRIGGERS, people_csv_bytes
from al_tasks.labelling.export import query_set_csv_bytes
from al_tasks.scoring.daily import LIST_COLUMNS
from al_tasks.scoring.stream import STREAM_LIST_COLUMNS

#: CSVs written with pandas' ``to_csv``: machine files, read back by the product.
MACHINE_CSV_WRITERS = {
    "al_tasks/labelling/store.py": "the label store and the evaluation set (id,label)",
    "al_tasks/scoring/daily.py": "the staged day's rejects, re-read by the scoring step (which writes them for people)",
    "al_tasks/loop/seeding.py": "sampled seed files (id,label) for the simulated labeller",
    "al_tasks/io/complaints.py": "a temporary CSV of JSON-lines complaints for Spark",
    "al_tasks/ml/features.py": "featurize's corpus rejects (line,id,reason)",
}

HOSTILE = ['=HYPERLINK("http://evil.example","x")', "+1+2", "-2+3", "@SUM(A1:A2)", "\t=1", "\r=1", -5, -0.25]


def cells_of(data: bytes) -> list[str]:
    return [cell for row in csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")) for cell in row]


def test_csvs_are_written_for_people_or_listed_as_machine_files():
    writers = set()
    for path in (REPO_ROOT / "al_tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to_csv":
                writers.add(str(path.relative_to(REPO_ROOT)))
    assert writers <= set(MACHINE_CSV_WRITERS), writers - set(MACHINE_CSV_WRITERS)


def test_lists_and_query_sets_have_no_formula_cell():
    n = len(HOSTILE)
    for columns in (LIST_COLUMNS, STREAM_LIST_COLUMNS):
        frame = pd.DataFrame(dict.fromkeys(columns, HOSTILE))
        cells = cells_of(people_csv_bytes(frame, columns))
        assert len(cells) == (n + 1) * len(columns)
        assert not [c for c in cells if c.startswith(FORMULA_TRIGGERS)]
    query = pd.DataFrame({"id": range(n), "text": HOSTILE, "predicted_label": HOSTILE, "confidence": [-0.5] * n})
    cells = cells_of(query_set_csv_bytes(query))
    assert "'-0.5000" in cells and '\'=HYPERLINK("http://evil.example","x")' in cells
    assert not [c for c in cells if c.startswith(FORMULA_TRIGGERS)]
