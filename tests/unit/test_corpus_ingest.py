"""The streaming corpus reader on real files: chunked reads give what a whole read gives,
rejects point at the right records, the ingest writes a Parquet dataset and is reused."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from al_tasks.config import SHIPPED_CORPUS, LoopConfig
from al_tasks.io.corpus import ReadStats, ingest_corpus, iter_corpus_chunks, read_corpus, read_rejects

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
