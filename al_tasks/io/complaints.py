"""New complaint files in CFPB format: CSV, CSV.gz and JSON lines, local or on S3.

The daily ingest DAG and the streaming scorer read complaint files with the same code
and the same rules as the corpus (:func:`al_tasks.io.corpus.iter_corpus_chunks`): rows without
narrative, with a non-integer id, with bytes that are not UTF-8 or with an id already
seen are rejected with their file, line and reason.

A landing location (a folder, or ``s3://bucket/prefix``) holds a day's files as
``<D>*.csv``, ``<D>/*.csv`` or ``date=<D>/*.csv`` (any of :data:`COMPLAINT_SUFFIXES`).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.io.corpus import iter_corpus_chunks

DATE_COLUMN = "Date received"
#: File name endings a landing folder (or stream source) may hold.
COMPLAINT_SUFFIXES = (".csv", ".csv.gz", ".json", ".jsonl", ".ndjson")
#: CFPB API / JSON export names of the columns, mapped to the CSV export's names.
JSON_FIELD_ALIASES = {
    "complaint_id": "Complaint ID",
    "date_received": "Date received",
    "complaint_what_happened": "Consumer complaint narrative",
}
#: Columns of every rejects file of new complaints.
REJECT_COLUMNS = ("file", "line", "id", "reason", "stage")


def parse_day(value: str | dt.date | dt.datetime) -> dt.date:
    """``YYYY-MM-DD`` (or a date/datetime) -> ``datetime.date``; raises ``ValueError``."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value).strip()[:10])


def day_range(start: str | dt.date, end: str | dt.date | None = None) -> list[dt.date]:
    """Every day from ``start`` to ``end`` inclusive (just ``start`` when end is None)."""
    first, last = parse_day(start), parse_day(end) if end else parse_day(start)
    if last < first:
        raise ValueError(f"--to {last} is before --date {first}")
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def is_complaint_file(name: str) -> bool:
    """True for visible ``.csv``, ``.csv.gz``, ``.json``, ``.jsonl`` or ``.ndjson`` files.

    Names starting with ``.`` or ``_`` are in-flight or bookkeeping files (Spark's file
    source skips them too), so writers can drop a file atomically by renaming it.
    """
    base = name.rsplit("/", 1)[-1]
    return not base.startswith((".", "_")) and base.lower().endswith(COMPLAINT_SUFFIXES)


def read_complaint_file(
    path: str | Path, config: LoopConfig, *, name: str | None = None, extra_columns: Iterable[str] = (DATE_COLUMN,)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read one CFPB-format file (CSV, CSV.gz or JSON lines) with the corpus rules.

    Rows without narrative, with a non-integer id, with bytes that are not UTF-8 or with
    an id already seen in the file are rejected, exactly as the corpus reader
    :func:`al_tasks.io.corpus.iter_corpus_chunks` does (it does the checking).

    Parameters
    ----------
    path : the file; its suffix picks the format
    name : what to call the file in the outputs (default: its name)
    extra_columns : columns copied next to each kept row when the file has them
        (missing ones are empty strings)

    Returns
    -------
    docs : DataFrame ``id`` int64, ``text`` str, ``file`` str, ``line`` int64, then
        ``extra_columns`` (str), one row per kept complaint, in file order
    rejects : DataFrame with :data:`REJECT_COLUMNS` (``line`` is the CSV record number
        with the header as 1, or the JSON line number; ``stage`` is ``"read"``)
    """
    path = Path(path)
    name = name or path.name
    extra_columns = list(extra_columns)
    if path.name.lower().endswith((".json", ".jsonl", ".ndjson")):
        with tempfile.TemporaryDirectory(prefix="al-jsonl-") as tmp:
            csv_path, line_of_row, json_rejects = _jsonl_to_csv(path, Path(tmp) / "rows.csv", config)
            docs, rejects = _read_csv_file(csv_path, config, name, extra_columns)
        # The reader numbers records from 2 (header = 1); map back to JSON line numbers.
        rejects["line"] = line_of_row[rejects["line"].to_numpy(dtype=np.int64) - 2]
        docs["line"] = line_of_row[docs["line"].to_numpy(dtype=np.int64) - 2]
        rejects = pd.concat([json_rejects.assign(file=name), rejects], ignore_index=True)
        return docs, rejects.sort_values("line", kind="stable").reset_index(drop=True)[list(REJECT_COLUMNS)]
    return _read_csv_file(path, config, name, extra_columns)


def _read_csv_file(path: Path, config: LoopConfig, name: str, extra_columns: list[str]):
    """One CSV/CSV.gz through the corpus reader (:func:`~al_tasks.io.corpus.iter_corpus_chunks`)."""
    docs, rejects = [], []
    for chunk_docs, chunk_rejects in iter_corpus_chunks(path, config, with_labels=False, extra_columns=extra_columns):
        docs.append(chunk_docs)
        rejects.append(chunk_rejects)
    if not docs:
        raise pd.errors.EmptyDataError(f"{path}: no records")
    docs = pd.concat(docs, ignore_index=True)
    extras = {c: docs[c] for c in extra_columns}
    docs = docs[["id", "text"]].assign(file=name, line=docs["line"].to_numpy(np.int64), **extras)
    rejects = pd.concat(rejects, ignore_index=True).assign(file=name, stage="read")[list(REJECT_COLUMNS)]
    return docs.reset_index(drop=True), rejects.reset_index(drop=True)


def _jsonl_to_csv(path: Path, out: Path, config: LoopConfig) -> tuple[Path, np.ndarray, pd.DataFrame]:
    """JSON lines -> a UTF-8 CSV the corpus reader can check; (csv, JSON line of each row, rejects).

    A line that is not UTF-8 or not a JSON object is rejected here, because once decoded
    with replacement it could no longer be told apart.
    """
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    records, lines, rejects = [], [], []
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                rejects.append((number, "", "line has bytes that are not UTF-8"))
                continue
            except json.JSONDecodeError as exc:
                rejects.append((number, "", f"not valid JSON: {exc.msg}"))
                continue
            if not isinstance(record, dict):
                rejects.append((number, "", "not a JSON object"))
                continue
            record = {JSON_FIELD_ALIASES.get(k, k): ("" if v is None else str(v)) for k, v in record.items()}
            records.append(record)
            lines.append(number)
    frame = pd.DataFrame.from_records(records) if records else pd.DataFrame()
    for column in (config.id_column, config.text_column):
        if column not in frame.columns:
            frame[column] = pd.Series([""] * len(frame), dtype="str")
    frame.to_csv(out, index=False)
    json_rejects = pd.DataFrame(rejects, columns=["line", "id", "reason"]).assign(stage="read")
    return out, np.asarray(lines, dtype=np.int64), json_rejects


def _matches_day(relative: str, day: dt.date) -> bool:
    """``<D>[-_.]*.ext``, ``<D>/...`` or ``date=<D>/...`` (relative to the landing root)."""
    iso = day.isoformat()
    if not is_complaint_file(relative):
        return False
    if "/" in relative:
        return relative.split("/", 1)[0] in {iso, f"date={iso}"}
    # 2019-02-19.csv, 2019-02-19-part2.csv.gz; not 2019-02-190.csv
    return relative.startswith(iso) and not relative[len(iso) : len(iso) + 1].isdigit()


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix ending in ``/`` or empty)."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket")
    return bucket, (prefix.rstrip("/") + "/") if prefix.strip("/") else ""


def landing_files(
    landing: str, day: dt.date, *, s3_client=None, download_dir: str | Path | None = None
) -> list[tuple[str, Path]]:
    """The complaint files of ``day`` under ``landing``, sorted by name.

    ``landing`` is a local folder, or an ``s3://bucket/prefix`` URL read with
    ``s3_client`` (a boto3 S3 client); S3 objects are downloaded to ``download_dir``.

    Returns a list of (name shown in outputs, local path).
    """
    if landing.startswith("s3://"):
        from al_tasks.io import s3

        if s3_client is None:
            raise ValueError(f"landing {landing} is on S3 but no S3 client was given")
        if download_dir is None:
            raise ValueError("download_dir is required for an S3 landing location")
        bucket, prefix = split_s3_url(landing)
        download_dir = Path(download_dir)
        if download_dir.exists():
            shutil.rmtree(download_dir)  # a re-run sees the bucket as it is now
        found = []
        for key in s3.list_keys(s3_client, bucket, prefix):
            relative = key[len(prefix) :]
            if _matches_day(relative, day):
                local = s3.download_file(s3_client, bucket, key, download_dir / relative)
                found.append((f"s3://{bucket}/{key}", local))
        return sorted(found)
    root = Path(landing)
    if not root.is_dir():
        raise FileNotFoundError(f"landing folder {root} does not exist")
    iso = day.isoformat()
    # Only where a day's files can be: a landing folder holds years of them.
    candidates = [*root.glob(f"{iso}*"), *(root / iso).rglob("*"), *(root / f"date={iso}").rglob("*")]
    found = set()
    for path in candidates:
        relative = path.relative_to(root).as_posix()
        if path.is_file() and _matches_day(relative, day):
            found.add((relative, path))
    return sorted(found)


def read_complaint_files(named_paths, config: LoopConfig) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Read several complaint files: (all docs concatenated, one rejects frame per file).

    A file that cannot be read at all (no id/narrative column, broken CSV) becomes one
    reject line; the other files still go through.
    """
    frames, reject_frames = [], []
    for name, path in named_paths:
        try:
            docs, rejects = read_complaint_file(path, config, name=name)
            frames.append(docs)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            rejects = pd.DataFrame(
                {"file": [name], "line": [0], "id": [""], "reason": [f"file not readable: {exc}"], "stage": ["read"]}
            )
        reject_frames.append(rejects)
    docs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(
            {
                "id": np.zeros(0, np.int64),
                "text": pd.Series([], dtype="str"),
                "file": pd.Series([], dtype="str"),
                "line": np.zeros(0, np.int64),
                DATE_COLUMN: pd.Series([], dtype="str"),
            }
        )
    )
    return docs, reject_frames


def empty_rejects() -> pd.DataFrame:
    """A rejects frame with no rows (:data:`REJECT_COLUMNS`)."""
    return pd.DataFrame({c: pd.Series([], dtype="int64" if c == "line" else "str") for c in REJECT_COLUMNS})
