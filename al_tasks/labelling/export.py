"""Query sets out: the CSV a labeller opens in a spreadsheet, and its manifest."""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.io.atomic import atomic_write_bytes
from al_tasks.io.people_csv import count_neutralised, people_csv_bytes
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
    """Write the query-set CSV and its JSON manifest, both atomically.

    Returns the manifest::

        {"task", "round", "model_version", "strategy", "created_at" (UTC ISO 8601),
         "csv_file" (name), "csv_sha256", "columns",
         "counts": {"items", "neutralised_cells", "by_model_guess": {label: n}},
         "ids": [str, ...]  # the round's query ids, rank order}
    """
    import hashlib

    frame = query_set_frame(query_df)
    data = people_csv_bytes(frame)
    csv_path, manifest_path = Path(csv_path), Path(manifest_path)
    atomic_write_bytes(csv_path, data)
    manifest = {
        "task": task,
        "round": int(round_number),
        "model_version": model_version,
        "strategy": strategy,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "csv_file": csv_path.name,
        "csv_sha256": hashlib.sha256(data).hexdigest(),
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
