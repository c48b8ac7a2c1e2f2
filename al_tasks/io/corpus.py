"""Read a corpus in CFPB export format, in chunks of bounded size.

The CFPB's ``complaints.csv`` names its columns ``Complaint ID``, ``Consumer complaint
narrative``, ``Product``, ...; the column names are configurable (``LoopConfig``).

One reader, :func:`iter_corpus_chunks`, serves the corpus ingest (:func:`ingest_corpus`,
which streams the file into a Parquet dataset in the workspace), the daily DAG's pool
additions and the streaming scorer (:mod:`al_tasks.io.complaints`). It reads CSV, CSV.gz
(quoted multi-line narratives included: pandas' C parser, not a line split) and Parquet
``chunk_rows`` records at a time, so memory does not grow with the file.

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
import json
import logging
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


def _raw_chunks(path: Path, wanted: list[str], optional: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file's ``wanted`` (required) and ``optional`` columns as str, ``chunk_rows`` records at a time."""
    if _is_parquet(path):
        yield from _parquet_chunks(path, wanted, optional, chunk_rows)
        return
    keep = {*wanted, *optional}
    try:
        # Bad bytes become U+FFFD so the record can be rejected by position, not the file.
        reader = pd.read_csv(
            path,
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
            raw.attrs["bytes_read"] = _position(reader)
            yield raw.rename(columns=lambda c: c.lstrip("\ufeff"))


def _position(reader) -> int:
    """How far (bytes as stored) pandas has read the file: for progress only, 0 if unknown."""
    handle = getattr(getattr(reader, "handles", None), "handle", None)
    handle = getattr(handle, "fileobj", None) or handle  # a gzip file: the compressed position
    try:
        return int(handle.tell())
    except (AttributeError, OSError, ValueError):
        return 0


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
    stats.bytes_total = 0 if path.is_dir() else path.stat().st_size
    seen = np.zeros(0, dtype=np.int64)
    for raw in _raw_chunks(path, [config.id_column, config.text_column], optional, chunk_rows):
        docs, rejects = check_records(
            raw,
            config,
            label_column=label_column,
            extra_columns=extra_columns,
            bad_bytes=bad_bytes,
            first_line=stats.rows_read + 2,
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
) -> IngestedCorpus:
    """Stream the corpus into ``<workspace>/<task>/corpus/<fingerprint>/``, unless already there.

    One Parquet file per chunk (so Spark reads them in parallel), the rejects appended
    chunk by chunk, the manifest and ``_SUCCESS`` written last; the folder is swapped
    in whole. Logs rows read, rows/s at most every ``progress_seconds``.
    """
    from al_tasks.io.atomic import atomic_write_text, fresh_dir, swap_in
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
        files = _write_chunks(path, config, staging, chunk_rows, bad_bytes, stats, progress_seconds, started)
        manifest = _manifest(fp, path, file_sha, chunk_rows, files, stats, started)
        if not stats.accepted:
            raise CorpusError(f"{path}: no record with a narrative ({stats.rows_read} records read)")
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=2))
        (staging / "_SUCCESS").touch()
    except BaseException:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, target)
    log.info(
        "ingest: %s records of %s: %s accepted, %s without narrative, %s rejected, in %.1fs",
        f"{stats.rows_read:,}",
        path,
        f"{stats.accepted:,}",
        f"{stats.without_narrative:,}",
        f"{stats.rejected:,}",
        manifest["seconds"],
    )
    return IngestedCorpus(root=target, manifest=manifest)


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


def _write_chunks(
    path: Path,
    config: LoopConfig,
    out: Path,
    chunk_rows: int | None,
    bad_bytes: bool,
    stats: ReadStats,
    progress_seconds: float,
    started: float,
) -> int:
    """Each chunk's docs to ``out/docs/part-NNNNN.parquet``, its rejects to ``out/rejects.csv``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / "docs").mkdir()
    rejects_path = out / "rejects.csv"
    # Rejects are read by people: formula-safe like every people CSV, appended chunk by chunk.
    rejects_path.write_bytes(people_csv_bytes(pd.DataFrame(columns=list(REJECT_FRAME_COLUMNS))))
    last_report = time.perf_counter()
    files = 0
    chunks = iter_corpus_chunks(
        path, config, with_labels=True, chunk_rows=chunk_rows, list_empty=False, bad_bytes=bad_bytes, stats=stats
    )
    for docs, rejects in chunks:
        if len(docs):
            table = pa.Table.from_pandas(docs.drop(columns="line"), preserve_index=False)
            pq.write_table(table, out / "docs" / f"part-{files:05d}.parquet", row_group_size=10_000)
            files += 1
        if len(rejects):
            with rejects_path.open("ab") as sink:
                sink.write(people_csv_bytes(rejects, columns=REJECT_FRAME_COLUMNS, header=False))
        if time.perf_counter() - last_report >= progress_seconds:
            last_report = time.perf_counter()
            _log_progress(stats, last_report - started)
    return files


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
