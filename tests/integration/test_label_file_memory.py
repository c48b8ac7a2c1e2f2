"""Ingesting a 50 MB labelled file stays far under 500 MB of peak memory: it is refused
by a limit before it is read whole (``bench/label_file_memory.py`` measures each case in
a fresh process)."""

from __future__ import annotations

from bench.label_file_memory import run

PEAK_MB = 500


def test_big_labelled_files_stay_within_memory(tmp_path):
    results = run(tmp_path)
    assert results["refused_by_size"]["file_mb"] > 50
    assert results["refused_by_size"]["outcome"].endswith(
        "it was not read. A labelled query set is far smaller: check that this is the right file, or raise the limit"
    )
    assert "line 5002: more than 5000 data rows" in results["refused_by_rows"]["outcome"]
    assert results["at_the_row_limit"]["outcome"].startswith("read: 100 accepted, 4900 rejected")
    for case, measured in results.items():
        assert measured["peak_rss_mb"] < PEAK_MB, (case, measured)
