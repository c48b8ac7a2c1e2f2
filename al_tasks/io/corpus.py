"""Read a corpus in CFPB export format, in chunks of bounded size.

The CFPB's ``complaints.csv`` names its columns ``Complaint ID``, ``Consumer complaint
narrative``, ``Product``, ...; the column names are configurable (``LoopConfig``).

One reader, :func:`iter_corpus_chunks`, serves the corpus ingest (:func:`ingest_corpus`,
which streams the file into a Parquet dataset in the workspace), the daily DAG's pool
additions and the streaming scorer (:mod:`al_tasks.io.complaints`). It reads CSV, CSV.gz
(quoted multi-line narratives included: pandas' C parser, not a line split) and Parquet
``chunk_rows`` records at a time, so memory does not grow with the file.

The ingest of a plain (uncompressed) CSV can parse it in parallel
(``LoopConfig.ingest_workers``): the file is cut into byte ranges that start at record
boundaries (a newline with an even number of ``"`` bytes before it, RFC 4180 quoting),
each range is parsed by the same reader in a worker process, and duplicate ids across
ranges are settled in file order, so the dataset, rejects and manifest counts are the
ones a single reader gives. CSV.gz (no random access) and Parquet are read serially.

Rows that cannot be used are never dropped silently: real defects (an id that is not a
whole number, bytes that are not UTF-8, an id already seen, in this chunk or an earlier
one) come back as *rejects*, each with its record position (``line``: the CSV record
number, header = 1) and the reason. Rows without a narrative are normal in the real
export (about four in five): the corpus ingest counts them; complaint files list them.
"""

from __future__ import annotations

import codecs
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.errors import CorpusError
from al_tasks.io.people_csv import people_csv_bytes

log = logging.getLogger(__name__)

#: Bump when the reader's rules change, so an old ingest is not reused.
READER_VERSION = 1
#: Records per chunk when the caller does not say (about 50 MB of CFPB narratives).
DEFAULT_CHUNK_ROWS = 50_000
#: A plain CSV smaller than this is read by one reader (worker start-up is not worth it).
PARALLEL_MIN_BYTES = 128 << 20
#: Smallest byte range of a parallel ingest; more ranges than workers balance the load.
MIN_RANGE_BYTES = 32 << 20
RANGES_PER_WORKER = 4
EMPTY_NARRATIVE = "empty narrative"
REJECT_FRAME_COLUMNS = ("line", "id", "reason")


@dataclasses.dataclass
class ReadStats:
    """Counters of one read, updated chunk by chunk.

    Attributes
    ----------
    rows_read : records read (every CSV record after the header)
    without_narrative : records with an empty narrative (not defects)
    accepted : records kept
    rejected : records with a defect (in the rejects)
    chunks : chunks read
    peak_chunk_rows : most records held at once
    peak_chunk_text_bytes : most narrative characters held at once
    bytes_read, bytes_total : how far into the file (as stored) the read is (CSV only)
    """

    rows_read: int = 0
    without_narrative: int = 0
    accepted: int = 0
    rejected: int = 0
    chunks: int = 0
    peak_chunk_rows: int = 0
    peak_chunk_text_bytes: int = 0
    bytes_read: int = 0
    bytes_total: int = 0


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A cleaned corpus held in memory (small files: tests, seeding, the shipped sample).

    Attributes
    ----------
    docs : DataFrame with columns ``id`` (int64, unique), ``text`` (str), and, when the
        file has it, ``label`` (str, the ground-truth column: simulation and benchmarks).
    rejects : DataFrame with columns ``line`` (CSV line number; header = 1), ``id``,
        ``reason``: every row left out of ``docs`` (empty narratives included).
    source : str, the file read.
    """

    docs: pd.DataFrame
    rejects: pd.DataFrame
    source: str

    def __len__(self) -> int:
        return len(self.docs)


# ----------------------------------------------------------------------------- the file
#: scan_file results of this process, by (path, size, mtime): a round asks several times.
_SCANNED: dict[tuple[str, int, int], tuple[str, bool]] = {}


def scan_file(path: str | Path) -> tuple[str, bool]:
    """:func:`_scan_file`, remembered for an unchanged file (same size and modification time)."""
    path = Path(path)
    if path.is_dir():
        return _scan_file(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SCANNED:
        _SCANNED[key] = _scan_file(path)
    return _SCANNED[key]


def _scan_file(path: str | Path) -> tuple[str, bool]:
    """One pass over the file: (sha256 of its bytes, True when its text is all UTF-8).

    A gzipped file is hashed as stored and checked decompressed; a Parquet file is hashed
    and checked too (cheap next to reading it), a folder signed by its listing.
    """
    path = Path(path)
    if path.is_dir():  # a Parquet dataset: its files' names, sizes and times; Parquet text is UTF-8
        return _dir_signature(path), True
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    valid = True
    gz = path.suffix == ".gz"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            if valid and not gz:
                valid = _decodes(decoder, block)
    if valid and not gz:
        valid = _decodes(decoder, b"", final=True)
    if gz:
        decoder = codecs.getincrementaldecoder("utf-8")()
        with gzip.open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                if not _decodes(decoder, block):
                    return digest.hexdigest(), False
        valid = _decodes(decoder, b"", final=True)
    return digest.hexdigest(), valid


def _decodes(decoder, block: bytes, final: bool = False) -> bool:
    try:
        decoder.decode(block, final)
    except UnicodeDecodeError:
        return False
    return True


def _is_parquet(path: Path) -> bool:
    return path.suffix == ".parquet" or path.is_dir()


def _raw_chunks(
    path: Path,
    wanted: list[str],
    optional: list[str],
    chunk_rows: int,
    byte_range: tuple[int, int, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """The file's ``wanted`` (required) and ``optional`` columns as str, ``chunk_rows`` records at a time.

    ``byte_range`` (header_end, start, end) reads the header record and then only the
    records in bytes [start, end) of a plain CSV (see :class:`_RangeFile`).
    """
    if _is_parquet(path):
        yield from _parquet_chunks(path, wanted, optional, chunk_rows)
        return
    source = _RangeFile(path, *byte_range) if byte_range else None
    try:
        yield from _csv_chunks(path, source, wanted, optional, chunk_rows)
    finally:
        if source is not None:
            source.close()


def _csv_chunks(path: Path, source, wanted: list[str], optional: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Parse with pandas' C parser ``source`` (a :class:`_RangeFile`) or, when None, the whole ``path``."""
    keep = {*wanted, *optional}
    try:
        # Bad bytes become U+FFFD so the record can be rejected by position, not the file.
        reader = pd.read_csv(
            io.BufferedReader(source, 1 << 20) if source is not None else path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8",
            encoding_errors="replace",
            usecols=lambda c: c.lstrip("\ufeff") in keep,
            chunksize=chunk_rows,
        )
    except pd.errors.EmptyDataError as exc:
        raise CorpusError(f"{path}: file is empty") from exc
    with reader:
        for number, raw in enumerate(reader):
            if number == 0:
                _check_columns(path, wanted, raw.columns)
            raw.attrs["bytes_read"] = source.consumed if source is not None else _position(reader)
            yield raw.rename(columns=lambda c: c.lstrip("\ufeff"))


def _position(reader) -> int:
    """How far (bytes as stored) pandas has read the file: for progress only, 0 if unknown."""
    handle = getattr(getattr(reader, "handles", None), "handle", None)
    handle = getattr(handle, "fileobj", None) or handle  # a gzip file: the compressed position
    try:
        return int(handle.tell())
    except (AttributeError, OSError, ValueError):
        return 0


class _RangeFile(io.RawIOBase):
    """A CSV made of the file's header record and its bytes [start, end) (start at a record boundary).

    Parameters
    ----------
    path : the plain CSV
    header_end : byte just after the header record (its first even-quote-parity newline)
    start, end : the range; ``start == 0`` is the range with the header (not repeated)
    """

    def __init__(self, path: Path, header_end: int, start: int, end: int):
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._pending = self._file.read(header_end) if start > 0 else b""
        self._file.seek(start)
        self._left = end - start
        #: bytes of the range read so far (progress)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer)
        if self._pending:
            n = min(len(view), len(self._pending))
            view[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        if self._left <= 0:
            return 0
        n = self._file.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        self.consumed += n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _parquet_chunks(path: Path, wanted: list[str], optional: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(path), format="parquet")
    names = dataset.schema.names
    _check_columns(path, wanted, names)
    columns = [c for c in dict.fromkeys([*wanted, *optional]) if c in names]
    for batch in dataset.to_batches(columns=columns, batch_size=chunk_rows):
        if batch.num_rows:
            frame = batch.to_pandas()
            yield frame.astype(dict.fromkeys(frame.columns, str)).where(frame.notna(), "")


def _check_columns(path: Path, wanted: list[str], found) -> None:
    found = [c.lstrip("\ufeff") for c in found]
    missing = [c for c in wanted if c not in found]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; found {found[:20]}")


# ----------------------------------------------------------------------------- the rules
def check_records(
    raw: pd.DataFrame,
    config: LoopConfig,
    *,
    label_column: str = "",
    extra_columns: Iterable[str] = (),
    bad_bytes: bool = False,
    first_line: int = 2,
    seen: np.ndarray | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw corpus records into (docs, rejects) by the corpus rules.

    Parameters
    ----------
    raw : DataFrame of str with the id and text columns (and ``label_column``), one row per record
    config : LoopConfig (column names)
    label_column : ground-truth column to keep as ``label`` ("" for none)
    extra_columns : columns copied to ``docs`` as str ("" when the file has not got them)
    bad_bytes : the file had bytes that are not UTF-8 (decoded as U+FFFD): name them
    first_line : the CSV line number of the first record (header = 1)
    seen : sorted int64 ids kept by earlier chunks: a record repeating one is a duplicate

    Returns
    -------
    docs : DataFrame ``id`` int64, ``text`` str, ``line`` int64 (and ``label``, ``extra_columns``)
    rejects : DataFrame ``line``, ``id``, ``reason`` (empty narratives included, with
        reason :data:`EMPTY_NARRATIVE`)
    """
    ids = raw[config.id_column].astype(str).str.strip()
    texts = raw[config.text_column].astype(str)
    reasons, as_int = _reasons(ids, texts, bad_bytes, seen)
    keep = reasons == ""
    docs = pd.DataFrame(
        {
            "id": as_int[keep],
            "text": pd.Series(texts.to_numpy()[keep], dtype="str"),
            "line": (np.flatnonzero(keep) + first_line).astype("int64"),
        }
    )
    if label_column and label_column in raw.columns:
        docs["label"] = pd.Series(raw[label_column].astype(str).str.strip().to_numpy()[keep], dtype="str")
    for column in extra_columns:
        values = raw[column].to_numpy(dtype=object)[keep] if column in raw.columns else np.full(keep.sum(), "", object)
        docs[column] = pd.Series(values, dtype="str")
    rejects = pd.DataFrame(
        {
            "line": (np.flatnonzero(~keep) + first_line).astype("int64"),
            "id": pd.Series(ids.to_numpy()[~keep], dtype="str"),
            "reason": pd.Series(reasons[~keep], dtype="str"),
        }
    )
    return docs, rejects


def _reasons(ids: pd.Series, texts: pd.Series, bad_bytes: bool, seen) -> tuple[np.ndarray, np.ndarray]:
    """Per record: "" or the first rule it breaks; and its id as int64 (0 when not kept)."""
    reasons = np.full(len(ids), "", dtype=object)

    def flag(mask, reason: str) -> None:
        reasons[np.asarray(mask, dtype=bool) & (reasons == "")] = reason

    if bad_bytes:
        flag(texts.str.contains("\ufffd", regex=False), "narrative has bytes that are not UTF-8")
        flag(ids.str.contains("\ufffd", regex=False), "id has bytes that are not UTF-8")
    flag(texts.str.strip().isin(["", "nan", "None"]), EMPTY_NARRATIVE)
    numeric_ids = pd.to_numeric(ids.str.replace(r"\.0$", "", regex=True), errors="coerce")
    flag(numeric_ids.isna() | (numeric_ids % 1 != 0), "id is not a whole number")
    candidate = reasons == ""
    as_int = np.where(candidate, numeric_ids.fillna(0).to_numpy(), 0).astype(np.int64)
    earlier = np.zeros(len(ids), dtype=bool)
    if seen is not None and len(seen):
        earlier = candidate & np.isin(as_int, seen)
    repeated = pd.Series(as_int).where(candidate).duplicated(keep="first").to_numpy() & candidate
    flag(earlier | repeated, "duplicate id (first occurrence kept)")
    return reasons, as_int


# ----------------------------------------------------------------------------- the reader
def iter_corpus_chunks(
    path: str | Path,
    config: LoopConfig | None = None,
    *,
    with_labels: bool = True,
    extra_columns: Iterable[str] = (),
    chunk_rows: int | None = None,
    list_empty: bool = True,
    bad_bytes: bool | None = None,
    stats: ReadStats | None = None,
    byte_range: tuple[int, int, int] | None = None,
    seen: np.ndarray | None = None,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Read ``path`` (CSV, CSV.gz or Parquet) ``chunk_rows`` records at a time, with the corpus rules.

    Duplicate ids are found across chunks too (the first occurrence in the file is kept):
    the reader keeps the sorted ids it accepted (8 bytes each), never the texts.

    Parameters
    ----------
    path : the file (a Parquet folder is read as a dataset)
    config : LoopConfig (column names); default ``LoopConfig()``
    with_labels : keep the ground-truth column as ``label`` when the file has it
    extra_columns : other columns to copy next to each kept record (str)
    chunk_rows : records per chunk (default :data:`DEFAULT_CHUNK_ROWS`)
    list_empty : records without a narrative are listed in the rejects (complaint files);
        False only counts them in ``stats.without_narrative`` (the corpus export)
    bad_bytes : whether the file has bytes that are not UTF-8 (default: scan it first)
    stats : counters to update (peak chunk size included)
    byte_range : (header_end, start, end): read only the records in bytes [start, end) of a
        plain CSV, ``start`` and ``end`` at record boundaries (the parallel ingest); ``line``
        then counts from the range's first record (= 2)
    seen : sorted int64 ids accepted before this read (earlier ranges): repeats are duplicates

    Yields
    ------
    (docs, rejects) : per chunk, as :func:`check_records` returns them
    """
    config, path = config or LoopConfig(), Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus file not found")
    chunk_rows, stats = int(chunk_rows or DEFAULT_CHUNK_ROWS), stats if stats is not None else ReadStats()
    label_column = config.label_column if with_labels else ""
    extra_columns = list(extra_columns)
    if bad_bytes is None:
        bad_bytes = not _is_parquet(path) and not scan_file(path)[1]
    optional = [c for c in [label_column, *extra_columns] if c]
    stats.bytes_total = _bytes_to_read(path, byte_range)
    yield from _checked_chunks(
        _raw_chunks(path, [config.id_column, config.text_column], optional, chunk_rows, byte_range),
        config,
        stats,
        seen,
        label_column=label_column,
        extra_columns=extra_columns,
        bad_bytes=bad_bytes,
        list_empty=list_empty,
    )


def _bytes_to_read(path: Path, byte_range: tuple[int, int, int] | None) -> int:
    """Size (bytes as stored) of what one read covers: the range, the file, or 0 for a Parquet folder."""
    if byte_range:
        return byte_range[2] - byte_range[1]
    return 0 if path.is_dir() else path.stat().st_size


def _checked_chunks(
    raw_chunks: Iterable[pd.DataFrame],
    config: LoopConfig,
    stats: ReadStats,
    seen: np.ndarray | None,
    *,
    label_column: str,
    extra_columns: list[str],
    bad_bytes: bool,
    list_empty: bool,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
    """Each raw chunk through :func:`check_records`, counted in ``stats``, in file order.

    Parameters
    ----------
    raw_chunks : DataFrames of str, the records as :func:`_raw_chunks` yields them
    config : LoopConfig (column names)
    stats : counters of the read so far, updated chunk by chunk
    seen : sorted int64 ids accepted before this read (None: none)
    label_column, extra_columns, bad_bytes : as :func:`check_records` takes them
    list_empty : keep records without a narrative in the rejects (else only count them)

    Yields
    ------
    (docs, rejects) : per chunk, as :func:`check_records` returns them
    """
    # Only the accepted ids are carried from chunk to chunk (8 bytes each), so a duplicate
    # of an earlier chunk is found without holding its texts.
    seen = np.zeros(0, dtype=np.int64) if seen is None else seen
    for raw in raw_chunks:
        docs, rejects = check_records(
            raw,
            config,
            label_column=label_column,
            extra_columns=extra_columns,
            bad_bytes=bad_bytes,
            first_line=stats.rows_read + 2,  # before this chunk is counted: its first record
            seen=seen,
        )
        seen = np.union1d(seen, docs["id"].to_numpy())
        empty = (rejects["reason"] == EMPTY_NARRATIVE).to_numpy()
        stats.bytes_read = int(raw.attrs.get("bytes_read", 0))
        _count(stats, raw[config.text_column], docs, rejects, int(empty.sum()))
        if not list_empty:
            rejects = rejects.loc[~empty].reset_index(drop=True)
        yield docs, rejects


def _count(stats: ReadStats, texts: pd.Series, docs: pd.DataFrame, rejects: pd.DataFrame, n_empty: int) -> None:
    stats.rows_read += len(texts)
    stats.chunks += 1
    stats.peak_chunk_rows = max(stats.peak_chunk_rows, len(texts))
    stats.peak_chunk_text_bytes = max(stats.peak_chunk_text_bytes, int(texts.str.len().sum() or 0))
    stats.without_narrative += n_empty
    stats.accepted += len(docs)
    stats.rejected += len(rejects) - n_empty


def read_corpus(
    path: str | Path, config: LoopConfig | None = None, *, with_labels: bool = True, chunk_rows: int | None = None
) -> Corpus:
    """Read a whole (small) corpus into memory: :func:`iter_corpus_chunks`, concatenated.

    Large corpora go through :func:`ingest_corpus` instead, which never holds more than
    one chunk. Rejects list every record left out, empty narratives included.
    """
    docs, rejects = [], []
    for chunk_docs, chunk_rejects in iter_corpus_chunks(path, config, with_labels=with_labels, chunk_rows=chunk_rows):
        docs.append(chunk_docs.drop(columns="line"))
        rejects.append(chunk_rejects)
    if not docs:
        raise CorpusError(f"{path}: file is empty")
    return Corpus(
        docs=pd.concat(docs, ignore_index=True),
        rejects=pd.concat(rejects, ignore_index=True),
        source=str(path),
    )


# ----------------------------------------------------------------------------- the ingest
@dataclasses.dataclass(frozen=True)
class IngestedCorpus:
    """A corpus streamed into a Parquet dataset in the workspace.

    Attributes
    ----------
    root : ``<workspace>/<task>/corpus/<fingerprint>``: ``docs/part-*.parquet`` (``id``,
        ``text``, ``label`` when the file has it), ``rejects.csv``, ``manifest.json``, ``_SUCCESS``
    manifest : dict, the counts (``rows_read``, ``without_narrative``, ``accepted``,
        ``rejected``), the fingerprint and the source
    reused : True when this call read nothing
    """

    root: Path
    manifest: dict
    reused: bool = False

    @property
    def docs_path(self) -> Path:
        return self.root / "docs"

    @property
    def rejects_path(self) -> Path:
        return self.root / "rejects.csv"

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def n_docs(self) -> int:
        return int(self.manifest["accepted"])

    def doc_files(self) -> list[Path]:
        return sorted(self.docs_path.glob("part-*.parquet"))


def corpus_fingerprint(file_sha256: str, config: LoopConfig) -> str:
    """Key of an ingest: the file's bytes and every setting that changes what is read."""
    settings = {
        "reader_version": READER_VERSION,
        "file_sha256": file_sha256,
        "id_column": config.id_column,
        "text_column": config.text_column,
        "label_column": config.label_column,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def ingest_corpus(
    config: LoopConfig,
    corpus_path: str | Path | None = None,
    *,
    chunk_rows: int | None = None,
    stats: ReadStats | None = None,
    progress_seconds: float = 10.0,
    range_bytes: int | None = None,
) -> IngestedCorpus:
    """Stream the corpus into ``<workspace>/<task>/corpus/<fingerprint>/``, unless already there.

    One Parquet file per chunk (so Spark reads them in parallel), the rejects appended
    chunk by chunk, the manifest and ``_SUCCESS`` written last; the folder is swapped
    in whole. Logs rows read, rows/s at most every ``progress_seconds``.

    A plain CSV of at least :data:`PARALLEL_MIN_BYTES` is parsed by
    ``config.ingest_workers`` processes in byte ranges (:func:`_ingest_ranges`) when that
    is not 1; CSV.gz and Parquet keep the single reader (a gzip stream cannot be entered
    in the middle; a Parquet file is already columnar). Either way the dataset rows, the
    rejects and the manifest counts are the same. ``range_bytes`` sets the range size
    (and skips the size threshold): for tests.
    """
    from al_tasks.io.atomic import fresh_dir, swap_in
    from al_tasks.workspace import TaskWorkspace

    started = time.perf_counter()
    path = Path(corpus_path or config.corpus_path)
    if not path.exists():
        raise CorpusError(f"{path}: corpus file not found")
    file_sha, valid_utf8 = scan_file(path)
    fp = corpus_fingerprint(file_sha, config)
    target = TaskWorkspace(config).corpus_dir(fp)
    if (target / "_SUCCESS").exists():
        manifest = json.loads((target / "manifest.json").read_text())
        log.info("ingest: reusing %s (%s docs, fingerprint %s)", target, manifest["accepted"], fp)
        return IngestedCorpus(root=target, manifest=manifest, reused=True)
    stats = stats if stats is not None else ReadStats()
    staging = fresh_dir(target)
    try:
        bad_bytes = not valid_utf8 and not _is_parquet(path)
        read = _ReadSettings(path, config, int(chunk_rows or DEFAULT_CHUNK_ROWS), bad_bytes, progress_seconds, started)
        manifest = _ingest_into(
            staging, read, stats, fp=fp, file_sha=file_sha, chunk_rows=chunk_rows, range_bytes=range_bytes
        )
    except BaseException:
        import shutil

        # Nothing half-written is left behind: a failed or interrupted ingest starts afresh next time.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, target)
    _log_ingested(stats, path, manifest["seconds"])
    return IngestedCorpus(root=target, manifest=manifest)


def _ingest_into(
    staging: Path,
    read: _ReadSettings,
    stats: ReadStats,
    *,
    fp: str,
    file_sha: str,
    chunk_rows: int | None,
    range_bytes: int | None,
) -> dict:
    """Read the corpus into ``staging`` (docs, rejects), then its manifest and ``_SUCCESS``.

    Parameters
    ----------
    staging : an empty folder, swapped in as the ingest once this returns
    read : the ingest's reader settings (file, config, chunk size, start time)
    stats : counters to update
    fp, file_sha : the ingest's fingerprint and the file's sha256 (for the manifest)
    chunk_rows : records per chunk as the caller gave it (None: the default)
    range_bytes : byte-range size of a parallel read (None: sized from the file)

    Returns
    -------
    manifest : dict, as written to ``manifest.json``

    Raises
    ------
    CorpusError
        when no record has a narrative (an empty or wrong file is not an ingest)
    """
    from al_tasks.io.atomic import atomic_write_text

    workers = ingest_workers(read.config, read.path, forced=range_bytes is not None)
    files = _ingest_ranges(read, staging, stats, workers, range_bytes) if workers > 1 else None
    if files is None:  # one worker asked for, or the parallel read could not be used
        files = _ingest_serial(read, staging, stats)
    manifest = _manifest(fp, read.path, file_sha, chunk_rows, files, stats, read.started)
    if not stats.accepted:
        raise CorpusError(f"{read.path}: no record with a narrative ({stats.rows_read} records read)")
    # The manifest and _SUCCESS last: a folder with _SUCCESS is a complete ingest, reused as is.
    atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
    (staging / "_SUCCESS").touch()
    return manifest


def _log_ingested(stats: ReadStats, path: Path, seconds: float) -> None:
    """Log an ingest's counts: records read, accepted, without narrative, rejected, and its duration."""
    log.info(
        "ingest: %s records of %s: %s accepted, %s without narrative, %s rejected, in %.1fs",
        f"{stats.rows_read:,}",
        path,
        f"{stats.accepted:,}",
        f"{stats.without_narrative:,}",
        f"{stats.rejected:,}",
        seconds,
    )


def ingest_workers(config: LoopConfig, path: Path, *, forced: bool = False) -> int:
    """How many processes parse ``path`` at ingest: 1 unless a plain CSV of at least
    :data:`PARALLEL_MIN_BYTES` (any size when ``forced``) and ``config.ingest_workers`` is not 1.

    ``ingest_workers = 0`` sizes the pool to the Spark master's local cores (``local[N]``:
    N; ``local[*]`` or a cluster: this machine's CPUs, since the corpus file is read here,
    on the driver's disk, not by the executors).
    """
    if _is_parquet(path) or path.suffix == ".gz":
        return 1
    wanted = config.ingest_workers or _local_cores(config.spark_master)
    if wanted <= 1 or (not forced and path.stat().st_size < PARALLEL_MIN_BYTES):
        return 1
    return wanted


def _local_cores(spark_master: str) -> int:
    match = re.fullmatch(r"local\[(\d+)(,\s*\d+)?\]", spark_master.strip())
    if match:
        return int(match.group(1))
    if spark_master.strip() == "local":
        return 1
    return os.cpu_count() or 1


def _manifest(fp: str, path: Path, file_sha: str, chunk_rows, files: int, stats: ReadStats, started: float) -> dict:
    return {
        "fingerprint": fp,
        "source": str(path),
        "file_sha256": file_sha,
        "reader_version": READER_VERSION,
        "chunk_rows": int(chunk_rows or DEFAULT_CHUNK_ROWS),
        "files": files,
        **dataclasses.asdict(stats),
        "seconds": round(time.perf_counter() - started, 2),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


@dataclasses.dataclass(frozen=True)
class _ReadSettings:
    """What every reader of one ingest shares (picklable: sent to the range workers)."""

    path: Path
    config: LoopConfig
    chunk_rows: int
    bad_bytes: bool
    progress_seconds: float
    started: float

    def chunks(self, stats: ReadStats, byte_range=None, seen=None) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:
        return iter_corpus_chunks(
            self.path,
            self.config,
            with_labels=True,
            chunk_rows=self.chunk_rows,
            list_empty=False,
            bad_bytes=self.bad_bytes,
            stats=stats,
            byte_range=byte_range,
            seen=seen,
        )


def _start_output(out: Path) -> Path:
    """``out/docs/`` and ``out/rejects.csv`` (header only); returns the rejects file."""
    (out / "docs").mkdir()
    return _start_rejects(out)


def _start_rejects(out: Path) -> Path:
    rejects_path = out / "rejects.csv"
    # Rejects are read by people: formula-safe like every people CSV, appended chunk by chunk.
    rejects_path.write_bytes(people_csv_bytes(pd.DataFrame(columns=list(REJECT_FRAME_COLUMNS))))
    return rejects_path


def _append_rejects(rejects_path: Path, rejects: pd.DataFrame) -> None:
    with rejects_path.open("ab") as sink:
        sink.write(people_csv_bytes(rejects, columns=REJECT_FRAME_COLUMNS, header=False))


def _write_chunks(chunks, docs_dir: Path, part_prefix: str, on_chunk) -> int:
    """Each chunk's docs to ``docs_dir/<part_prefix>NNNNN.parquet``; ``on_chunk(docs, rejects)`` after each.

    Returns the number of files written (a chunk that keeps nothing writes none).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = 0
    for docs, rejects in chunks:
        if len(docs):
            table = pa.Table.from_pandas(docs.drop(columns="line"), preserve_index=False)
            pq.write_table(table, docs_dir / f"{part_prefix}{files:05d}.parquet", row_group_size=10_000)
            files += 1
        on_chunk(docs, rejects)
    return files


def _ingest_serial(read: _ReadSettings, out: Path, stats: ReadStats) -> int:
    """One reader: each chunk's docs to ``out/docs/part-NNNNN.parquet``, its rejects to ``out/rejects.csv``."""
    rejects_path = _start_output(out)
    last_report = time.perf_counter()

    def on_chunk(_docs: pd.DataFrame, rejects: pd.DataFrame) -> None:
        nonlocal last_report
        if len(rejects):
            _append_rejects(rejects_path, rejects)
        if time.perf_counter() - last_report >= read.progress_seconds:
            last_report = time.perf_counter()
            _log_progress(stats, last_report - read.started)

    return _write_chunks(read.chunks(stats), out / "docs", "part-", on_chunk)


# ----------------------------------------------------------------------------- parallel ingest
def record_ranges(path: str | Path, range_bytes: int) -> tuple[int, list[tuple[int, int]]]:
    """Cut a plain CSV into byte ranges of about ``range_bytes`` that start at record boundaries.

    Under RFC 4180 quoting a newline ends a record iff the number of ``"`` bytes before it
    is even (an escaped ``""`` counts two). One pass counts ``"`` up to each split target
    (``bytes.count``, in C); from each target the next newline of even parity is the cut.

    Returns
    -------
    header_end : int, the byte after the header record
    ranges : list of (start, end), covering the file; the first starts at 0 (with the header)
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header_end = _next_boundary(fh, 0, 0)
        if header_end is None:
            return size, [(0, size)]
        targets = range(header_end + range_bytes, size, range_bytes)
        cuts: list[int] = []
        fh.seek(0)
        position, quotes = 0, 0
        for target in targets:
            while position < target:
                block = fh.read(min(1 << 24, target - position))
                quotes += block.count(b'"')
                position += len(block)
            if cuts and cuts[-1] > target:  # the last cut is already past this target
                continue
            cut = _next_boundary(fh, target, quotes & 1)
            fh.seek(position)
            if cut is None or cut >= size:
                break
            cuts.append(cut)
    edges = [0, *cuts, size]
    return header_end, list(itertools.pairwise(edges))


def _next_boundary(fh, offset: int, parity: int) -> int | None:
    """The byte after the first newline at or after ``offset`` with an even count of ``"`` before it.

    ``parity`` is that count's parity at ``offset``; None when the file ends first.
    """
    fh.seek(offset)
    position = offset
    while block := fh.read(1 << 20):
        start = 0
        while (newline := block.find(b"\n", start)) >= 0:
            parity ^= block.count(b'"', start, newline) & 1
            if not parity:
                return position + newline + 1
            start = newline + 1
        parity ^= block.count(b'"', start) & 1
        position += len(block)
    return None


@dataclasses.dataclass(frozen=True)
class _RangeTask:
    """One byte range for a worker: ``seen`` = ids accepted by the earlier ranges (a second pass)."""

    read: _ReadSettings
    docs_dir: Path
    index: int
    header_end: int
    start: int
    end: int
    seen: np.ndarray | None = None


@dataclasses.dataclass
class _RangeResult:
    """A range read.

    Its counters, its rejects (``line`` counted from the range, first record = 2), its
    accepted ids (sorted) and how many Parquet files it wrote.
    """

    index: int
    stats: ReadStats
    rejects: pd.DataFrame
    ids: np.ndarray
    files: int


#: Per range (records read, docs accepted, bytes read), shared with the driver for progress.
_RANGE_PROGRESS = None


def _init_range_worker(progress) -> None:
    global _RANGE_PROGRESS
    _RANGE_PROGRESS = progress
    logging.basicConfig(level=logging.WARNING)


def _read_range(task: _RangeTask) -> _RangeResult:
    """A worker: the range's docs to ``part-<range>-NNNNN.parquet``, the rest returned."""
    for stale in task.docs_dir.glob(f"part-{task.index:05d}-*.parquet"):  # a second pass replaces the first
        stale.unlink()
    stats, rejects, ids = ReadStats(), [], []

    def on_chunk(docs: pd.DataFrame, chunk_rejects: pd.DataFrame) -> None:
        ids.append(docs["id"].to_numpy())
        if len(chunk_rejects):
            rejects.append(chunk_rejects)
        if _RANGE_PROGRESS is not None:
            _RANGE_PROGRESS[3 * task.index : 3 * task.index + 3] = [stats.rows_read, stats.accepted, stats.bytes_read]

    chunks = task.read.chunks(stats, (task.header_end, task.start, task.end), task.seen)
    files = _write_chunks(chunks, task.docs_dir, f"part-{task.index:05d}-", on_chunk)
    return _RangeResult(
        index=task.index,
        stats=stats,
        rejects=pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=list(REJECT_FRAME_COLUMNS)),
        ids=np.sort(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64),
        files=files,
    )


def _ingest_ranges(
    read: _ReadSettings, out: Path, stats: ReadStats, workers: int, range_bytes: int | None
) -> int | None:
    """Parse a plain CSV in byte ranges with ``workers`` processes; None when it cannot (then read it serially).

    Each range is read by :func:`iter_corpus_chunks` (same rules, same pandas parser) in a
    worker. Then, in file order, a range holding an id accepted by an earlier range is read
    again with those ids as ``seen`` (rare: duplicates across ranges), so the first
    occurrence in the file wins as with one reader. Record numbers are the range's plus
    the records of the ranges before it, as pandas counted them (blank lines skipped, as
    the single reader skips them). If pandas finds a range ending inside a quoted field
    (the file is not RFC 4180 quoted, e.g. a ``"`` inside an unquoted field), or any other
    parse error, the output is discarded and the single reader runs, so its result (or
    error) is what the caller gets.

    Processes, not Spark tasks: the ingest runs before the Spark session exists, the file
    is on the driver's disk (a cluster's executors may not see it) and a worker writes
    the same Parquet files the single reader writes, with no JVM round trip. The workers
    are spawned, not forked (the caller may hold a JVM and threads), so the calling
    script must be importable without side effects (``if __name__ == "__main__":``, as
    :mod:`multiprocessing` requires); if the workers die, the single reader runs.
    """
    import multiprocessing
    import shutil
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    if multiprocessing.current_process().daemon:  # e.g. an executor's worker: it may not start processes
        log.info("ingest: in a daemonic process, reading %s with one reader", read.path)
        return None
    size = read.path.stat().st_size
    range_bytes = range_bytes or max(MIN_RANGE_BYTES, math.ceil(size / (workers * RANGES_PER_WORKER)))
    header_end, ranges = record_ranges(read.path, range_bytes)
    if len(ranges) < 2:
        return None
    docs_dir = out / "docs"
    docs_dir.mkdir()
    tasks = [_RangeTask(read, docs_dir, i, header_end, start, end) for i, (start, end) in enumerate(ranges)]
    context = multiprocessing.get_context("spawn")
    progress = context.Array("q", 3 * len(tasks), lock=False)
    log.info("ingest: %s in %d byte ranges, %d processes", read.path, len(tasks), min(workers, len(tasks)))
    try:
        with ProcessPoolExecutor(
            min(workers, len(tasks)), mp_context=context, initializer=_init_range_worker, initargs=(progress,)
        ) as pool:
            results = _read_ranges_first_wins(pool, tasks, progress, size, read)
    except pd.errors.ParserError as exc:
        log.warning("ingest: byte ranges of %s do not parse (%s): reading it with one reader", read.path, exc)
        shutil.rmtree(docs_dir)
        return None
    except BrokenProcessPool as exc:  # e.g. the calling script cannot be imported by a spawned worker
        log.warning("ingest: worker processes failed (%s): reading %s with one reader", exc, read.path)
        shutil.rmtree(docs_dir)
        return None
    return _merge_ranges(results, out, stats, size)


def _read_ranges_first_wins(
    pool, tasks: list[_RangeTask], progress, size: int, read: _ReadSettings
) -> list[_RangeResult]:
    """Read every range on ``pool``, then again, in file order, each range that repeats an earlier range's ids.

    The ranges are read independently, so a range cannot know the ids accepted before it;
    the second pass gives it those ids as ``seen``, so the first occurrence in the file is
    kept as one reader keeps it. Duplicates across ranges are rare: usually no second pass.

    Returns
    -------
    results : list of :class:`_RangeResult`, one per task, in file order
    """
    results = _run_ranges(pool, tasks, progress, size, read)
    again, earlier = [], np.zeros(0, dtype=np.int64)
    for task, result in zip(tasks, results):
        if np.isin(result.ids, earlier).any():
            again.append(dataclasses.replace(task, seen=earlier))
        # First-pass ids are enough: an id a second pass drops repeats an even earlier range,
        # so the union of the ids up to this range is the same either way.
        earlier = np.union1d(earlier, result.ids)
    if again:
        log.info("ingest: %d ranges repeat ids of earlier ranges: reading them again", len(again))
        for result in _run_ranges(pool, again, progress, size, read):
            results[result.index] = result
    return results


def _merge_ranges(results: list[_RangeResult], out: Path, stats: ReadStats, size: int) -> int:
    """Join the ranges' output, in file order, into what one reader writes: rejects, counters, part files.

    ``out/rejects.csv`` gets every range's rejects with file-wide record numbers, ``stats``
    the sum of the ranges' counters, ``out/docs`` the single reader's ``part-NNNNN.parquet`` names.

    Parameters
    ----------
    results : one :class:`_RangeResult` per range, in file order
    out : the ingest's staging folder (``docs/`` holds the ranges' ``part-<range>-NNNNN.parquet``)
    stats : the ingest's counters, to which every range's are added
    size : the file's size in bytes (the whole file is read)

    Returns
    -------
    files : int, the number of Parquet files in ``out/docs``
    """
    rejects_path = _start_rejects(out)
    rows_before = 0
    for result in results:
        # A range counts its records from its own first one: shift by the records before it.
        if len(result.rejects):
            _append_rejects(rejects_path, result.rejects.assign(line=result.rejects["line"] + rows_before))
        rows_before += result.stats.rows_read
        _add_stats(stats, result.stats)
    stats.bytes_read = stats.bytes_total = size
    docs_dir = out / "docs"
    # part-<range>-<chunk> sorts in file order; renamed to the single reader's part-<n> names.
    parts = sorted(docs_dir.glob("part-*-*.parquet"))
    for number, part in enumerate(parts):
        part.rename(docs_dir / f"part-{number:05d}.parquet")
    return len(parts)


def _run_ranges(pool, tasks: list[_RangeTask], progress, size: int, read: _ReadSettings) -> list[_RangeResult]:
    """Run ``tasks`` on ``pool``; log the progress of all ranges every ``read.progress_seconds``."""
    from concurrent.futures import FIRST_COMPLETED, wait

    futures = [pool.submit(_read_range, task) for task in tasks]
    pending, last_report = set(futures), time.perf_counter()
    try:
        while pending:
            _done, pending = wait(pending, timeout=read.progress_seconds, return_when=FIRST_COMPLETED)
            if time.perf_counter() - last_report >= read.progress_seconds:
                last_report = time.perf_counter()
                now = ReadStats(
                    rows_read=sum(progress[0::3]),
                    accepted=sum(progress[1::3]),
                    bytes_read=sum(progress[2::3]),
                    bytes_total=size,
                )
                _log_progress(now, last_report - read.started)
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()


def _add_stats(total: ReadStats, part: ReadStats) -> None:
    """Add a range's counters to the ingest's (peaks are the largest chunk of any range)."""
    for name in ("rows_read", "without_narrative", "accepted", "rejected", "chunks"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.peak_chunk_rows = max(total.peak_chunk_rows, part.peak_chunk_rows)
    total.peak_chunk_text_bytes = max(total.peak_chunk_text_bytes, part.peak_chunk_text_bytes)


def _log_progress(stats: ReadStats, elapsed: float) -> None:
    share = stats.bytes_read / stats.bytes_total if stats.bytes_total else 0.0
    log.info(
        "ingest: %s records read (%s docs), %s docs/s, ETA %s s",
        f"{stats.rows_read:,}",
        f"{stats.accepted:,}",
        f"{stats.accepted / elapsed:,.0f}",
        f"{elapsed * (1 / share - 1):.0f}" if share > 0 else "?",
    )


def _dir_signature(path: Path) -> str:
    """A Parquet folder's fingerprint: names, sizes and modification times of its files."""
    digest = hashlib.sha256()
    for part in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = part.stat()
        digest.update(f"{part.relative_to(path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_rejects(ingested: IngestedCorpus) -> pd.DataFrame:
    """The ingest's rejects: DataFrame ``line`` int64, ``id`` str, ``reason`` str."""
    kinds = {"line": "int64", "id": "str", "reason": "str"}
    return pd.read_csv(ingested.rejects_path, dtype=kinds, keep_default_na=False)


def binary_labels(labels: pd.Series | np.ndarray, positive_class: str) -> np.ndarray:
    """Map a multi-class label column to ``positive_class`` / ``rest``."""
    arr = np.asarray(labels, dtype=object)
    return np.where(arr == positive_class, positive_class, "rest").astype(object)
