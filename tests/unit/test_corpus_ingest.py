"""The streaming corpus reader on real files: chunked reads give what a whole read gives,
rejects point at the right records, the ingest writes a Parquet dataset and is reused."""

from __future__ import annotations

import gzip
import io
import itertools

import numpy as np
import pandas as pd
import pytest

from al_tasks.config import SHIPPED_CORPUS, LoopConfig
from al_tasks.io.corpus import (
    ReadStats,
    ingest_corpus,
    ingest_workers,
    iter_corpus_chunks,
    read_corpus,
    read_rejects,
    record_ranges,
)

HEADER = "Date received,Product,Consumer complaint narrative,Complaint ID,Product group\n"
#: (record line, id cell, narrative bytes, expected reason or None when kept)
RECORDS = [
    (2, "101", b'"My servicer lost\nmy payment, twice.\n\nThen it charged a fee."', None),
    (3, "102", b"", "empty narrative"),
    (4, "103", b'"Collector called ""every day"", at work."', None),
    (5, "10x", b"Bad id.", "id is not a whole number"),
    (6, "104", b'"Caf\xe9 charged\ntwice."', "narrative has bytes that are not UTF-8"),
    (7, "105", b"", "empty narrative"),
    (8, "106", b'"Card, with\r\nCRLF inside."', None),
    (9, "107", b"Plain narrative.", None),
    (10, "101", b'"A second copy of 101,\nin another chunk."', "duplicate id (first occurrence kept)"),
    (11, "108", b"Last one.", None),
    (12, "103", b"Third chunk duplicate.", "duplicate id (first occurrence kept)"),
    (13, "109.0", b'"Whole number written as a float."', None),
]


def write_messy_csv(path) -> None:
    """A CFPB-format CSV with a UTF-8 BOM, quoted newlines, bad bytes, empty narratives and duplicates."""
    body = b"\xef\xbb\xbf" + HEADER.encode()
    for _line, id_cell, narrative, _ in RECORDS:
        body += b"2019-02-19,Mortgage," + narrative + b"," + id_cell.encode() + b",mortgage\n"
    if path.suffix == ".gz":
        body = gzip.compress(body)
    path.write_bytes(body)


def _read(path, chunk_rows, list_empty=True):
    stats = ReadStats()
    docs, rejects = [], []
    for d, r in iter_corpus_chunks(path, chunk_rows=chunk_rows, list_empty=list_empty, stats=stats):
        docs.append(d)
        rejects.append(r)
    return pd.concat(docs, ignore_index=True), pd.concat(rejects, ignore_index=True), stats


@pytest.mark.parametrize("name", ["export.csv", "export.csv.gz"])
def test_chunked_read_equals_the_whole_read_and_points_at_the_records(tmp_path, name):
    path = tmp_path / name
    write_messy_csv(path)
    whole_docs, whole_rejects, whole_stats = _read(path, chunk_rows=1000)
    docs, rejects, stats = _read(path, chunk_rows=3)  # 101's copies fall in chunks 1 and 4
    assert stats.chunks == 4 and whole_stats.chunks == 1 and stats.peak_chunk_rows == 3
    pd.testing.assert_frame_equal(docs, whole_docs)
    pd.testing.assert_frame_equal(rejects, whole_rejects)

    kept = [(line, int(float(i))) for line, i, _, reason in RECORDS if reason is None]
    assert list(zip(docs["line"], docs["id"])) == kept
    assert dict(zip(rejects["line"], rejects["reason"])) == {
        line: reason for line, _, _, reason in RECORDS if reason is not None
    }
    assert dict(zip(rejects["line"], rejects["id"]))[5] == "10x"
    by_id = docs.set_index("id")
    assert by_id.loc[101, "text"] == "My servicer lost\nmy payment, twice.\n\nThen it charged a fee."
    assert by_id.loc[103, "text"] == 'Collector called "every day", at work.'
    assert by_id.loc[106, "text"] == "Card, with\r\nCRLF inside."
    assert set(by_id["label"]) == {"mortgage"}  # the BOM did not hide the first column
    assert (stats.rows_read, stats.accepted, stats.without_narrative, stats.rejected) == (12, 6, 2, 4)


def test_corpus_ingest_counts_empty_narratives_and_writes_a_dataset(tmp_path):
    path = tmp_path / "export.csv"
    write_messy_csv(path)
    config = LoopConfig(workspace=str(tmp_path / "ws"), task="t", corpus_path=str(path))
    ingested = ingest_corpus(config, chunk_rows=3)
    manifest = ingested.manifest
    assert (manifest["rows_read"], manifest["accepted"], manifest["without_narrative"], manifest["rejected"]) == (
        12,
        6,
        2,
        4,
    )
    assert len(ingested.doc_files()) == 3 and manifest["files"] == 3  # chunk 2 keeps nothing
    docs = pd.read_parquet(ingested.docs_path)
    assert sorted(docs.columns) == ["id", "label", "text"]
    assert docs["id"].tolist() == [101, 103, 106, 107, 108, 109]
    rejects = read_rejects(ingested)
    assert rejects["line"].tolist() == [5, 6, 10, 12]  # defects only: no empty narratives
    assert "empty narrative" not in set(rejects["reason"])
    again = ingest_corpus(config, chunk_rows=3)
    assert again.reused and again.root == ingested.root


def test_parquet_corpus_reads_the_same_as_its_csv(tmp_path):
    csv_docs = read_corpus(SHIPPED_CORPUS).docs
    frame = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False)
    frame["Complaint ID"] = frame["Complaint ID"].astype(np.int64)
    frame.to_parquet(tmp_path / "corpus.parquet", index=False)
    docs, rejects, stats = _read(tmp_path / "corpus.parquet", chunk_rows=1000)
    assert stats.chunks == 9
    pd.testing.assert_frame_equal(docs.drop(columns="line"), csv_docs)
    assert len(rejects) == 0


def test_reader_holds_one_chunk_at_a_time(tmp_path):
    """Lazy: after the first chunk the reader has read that chunk only."""
    stats = ReadStats()
    chunks = iter_corpus_chunks(SHIPPED_CORPUS, chunk_rows=500, stats=stats)
    first_docs, _ = next(chunks)
    assert stats.rows_read == 500 and len(first_docs) == 500
    total = len(first_docs) + sum(len(d) for d, _ in chunks)
    assert total == 8017 and stats.peak_chunk_rows == 500 and stats.chunks == 17


# ----------------------------------------------------------------------------- parallel ingest
def _record_starts(path) -> list[int]:
    """Byte offset of each record of :func:`write_messy_csv`'s file (after the BOM and header)."""
    offset = len(b"\xef\xbb\xbf" + HEADER.encode())
    starts = []
    for _line, id_cell, narrative, _ in RECORDS:
        starts.append(offset)
        offset += len(b"2019-02-19,Mortgage," + narrative + b"," + id_cell.encode() + b",mortgage\n")
    assert offset == path.stat().st_size
    return starts


def _ingest_both(tmp_path, path, range_bytes, chunk_rows):
    """(serial, parallel) ingests of ``path``: each as (docs frame, rejects bytes, manifest)."""
    out = []
    for name, workers, split in [("serial", 1, None), ("parallel", 2, range_bytes)]:
        config = LoopConfig(workspace=str(tmp_path / name), task="t", corpus_path=str(path), ingest_workers=workers)
        ingested = ingest_corpus(config, chunk_rows=chunk_rows, range_bytes=split)
        docs = pd.concat([pd.read_parquet(part) for part in ingested.doc_files()], ignore_index=True)
        out.append((docs, ingested.rejects_path.read_bytes(), ingested.manifest))
    return out


COUNTS = ("fingerprint", "rows_read", "accepted", "without_narrative", "rejected", "bytes_total")


def test_record_ranges_cut_only_at_record_starts(tmp_path):
    """Quoted newlines (CRLF and blank lines inside narratives) and "" escapes never become a cut."""
    path = tmp_path / "export.csv"
    write_messy_csv(path)
    starts = _record_starts(path)
    header_end, ranges = record_ranges(path, range_bytes=1)  # a target at every byte
    assert header_end == starts[0]
    assert [start for start, _ in ranges[1:]] == starts[1:]  # every record boundary, nothing else
    assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(ranges))
    _, coarse = record_ranges(path, range_bytes=60)
    assert 2 < len(coarse) < len(ranges) and {start for start, _ in coarse[1:]} <= set(starts)


@pytest.mark.parametrize("range_bytes", [1, 60])
def test_parallel_ingest_equals_the_single_reader(tmp_path, range_bytes):
    """BOM, quoted newlines, a bad byte, empty narratives, duplicates of 101 and 103 in other ranges."""
    path = tmp_path / "export.csv"
    write_messy_csv(path)
    _, ranges = record_ranges(path, range_bytes)
    starts = _record_starts(path)
    range_of = {line: sum(start >= cut for cut, _ in ranges) for (line, *_), start in zip(RECORDS, starts)}
    assert range_of[2] != range_of[10] and range_of[4] != range_of[12]  # the copies are in other ranges
    (serial_docs, serial_rejects, serial), (docs, rejects, parallel) = _ingest_both(tmp_path, path, range_bytes, 2)
    pd.testing.assert_frame_equal(docs, serial_docs)
    assert docs["id"].tolist() == [101, 103, 106, 107, 108, 109]
    assert rejects == serial_rejects
    assert read_rejects_bytes(rejects)["line"].tolist() == [5, 6, 10, 12]
    assert {k: parallel[k] for k in COUNTS} == {k: serial[k] for k in COUNTS}
    assert parallel["chunks"] >= len(ranges) > serial["chunks"]  # it did read range by range


def read_rejects_bytes(raw: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(raw), dtype={"line": "int64", "id": "str"}, keep_default_na=False)


def test_parallel_ingest_of_the_shipped_corpus_with_a_late_duplicate(tmp_path):
    """The real corpus as a plain CSV, in 1 MB ranges, with its first record repeated at the end."""
    plain = tmp_path / "corpus.csv"
    body = gzip.decompress(SHIPPED_CORPUS.read_bytes())
    frame = pd.read_csv(io.BytesIO(body), dtype=str, keep_default_na=False, nrows=1)
    copy = io.StringIO()
    frame.to_csv(copy, index=False, header=False, lineterminator="\n")
    plain.write_bytes(body + (b"" if body.endswith(b"\n") else b"\n") + copy.getvalue().encode())
    (serial_docs, serial_rejects, serial), (docs, rejects, parallel) = _ingest_both(tmp_path, plain, 1 << 20, 500)
    pd.testing.assert_frame_equal(docs, serial_docs)
    assert rejects == serial_rejects
    assert {k: parallel[k] for k in COUNTS} == {k: serial[k] for k in COUNTS}
    assert len(docs) == 8017 and parallel["rejected"] == 1
    late = read_rejects_bytes(rejects)
    assert late["reason"].tolist() == ["duplicate id (first occurrence kept)"]
    assert late["line"].tolist() == [parallel["rows_read"] + 1]  # the last record (header = 1)
    assert late["id"].tolist() == [frame.iloc[0]["Complaint ID"]]
    assert parallel["chunks"] > serial["chunks"]


def test_parallel_ingest_of_a_file_that_is_not_rfc4180_falls_back_to_one_reader(tmp_path, caplog):
    """A '"' inside an unquoted field flips the quote parity: a cut lands inside a quoted narrative,
    pandas finds that range ending inside a string, and the single reader's result is returned."""
    path = tmp_path / "export.csv"
    rows = [b'2019-02-19,Mortgage,He is 5" tall,1,mortgage\n']
    rows += [b'2019-02-19,Mortgage,"Line one\nline two",%d,mortgage\n' % i for i in range(2, 12)]
    path.write_bytes(HEADER.encode() + b"".join(rows))
    with caplog.at_level("WARNING", logger="al_tasks.io.corpus"):
        (serial_docs, serial_rejects, serial), (docs, rejects, parallel) = _ingest_both(tmp_path, path, 30, 3)
    assert "do not parse" in caplog.text
    pd.testing.assert_frame_equal(docs, serial_docs)
    assert rejects == serial_rejects and parallel["rows_read"] == serial["rows_read"] == 11
    assert docs["text"].iloc[0] == 'He is 5" tall' and docs["text"].iloc[1] == "Line one\nline two"


def test_ingest_workers_only_for_a_large_plain_csv(tmp_path):
    path = tmp_path / "export.csv"
    write_messy_csv(path)
    assert ingest_workers(LoopConfig(ingest_workers=2), path) == 1  # small: one reader
    assert ingest_workers(LoopConfig(ingest_workers=2), path, forced=True) == 2
    assert ingest_workers(LoopConfig(ingest_workers=0, spark_master="local[2]"), path, forced=True) == 2
    assert ingest_workers(LoopConfig(ingest_workers=1), path, forced=True) == 1
    assert ingest_workers(LoopConfig(ingest_workers=2), SHIPPED_CORPUS, forced=True) == 1  # gzip: serial


def test_parallel_ingest_in_a_daemonic_process_uses_one_reader(tmp_path, monkeypatch):
    """A daemonic process (an executor's worker) may not start processes: the single reader runs."""
    import multiprocessing

    path = tmp_path / "export.csv"
    write_messy_csv(path)
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    (serial_docs, serial_rejects, serial), (docs, rejects, parallel) = _ingest_both(tmp_path, path, 1, 3)
    pd.testing.assert_frame_equal(docs, serial_docs)
    assert rejects == serial_rejects and parallel["chunks"] == serial["chunks"] == 4
