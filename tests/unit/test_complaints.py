"""Reading new complaint files and staging a day: no Spark, no Airflow, files in a tmp folder."""

from __future__ import annotations

import pandas as pd


def test_landing_files_of_a_day(tmp_path):
    import datetime as dt

    from al_tasks.io.complaints import landing_files

    names = [
        "2019-02-19.csv",
        "2019-02-19-part2.csv.gz",
        ".2019-02-19.csv.tmp",
        "2019-02-19/a.jsonl",
        "date=2019-02-19/b.csv",
        "date=2019-02-19/_SUCCESS.csv",
        "2019-02-190.csv",
        "2019-02-20.csv",
        "2019-02-19/notes.txt",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    found = [name for name, _ in landing_files(str(tmp_path), dt.date(2019, 2, 19))]
    assert found == ["2019-02-19-part2.csv.gz", "2019-02-19.csv", "2019-02-19/a.jsonl", "date=2019-02-19/b.csv"]


def test_stage_day_keeps_every_bad_row_with_its_reason(tmp_path):
    from al_tasks.config import LoopConfig
    from al_tasks.io.complaints import read_complaint_file
    from al_tasks.scoring.daily import stage_day

    config = LoopConfig(workspace=str(tmp_path / "ws"), task="t")
    landing = tmp_path / "landing"
    landing.mkdir()
    header = "Date received,Product,Consumer complaint narrative,Complaint ID\n"
    (landing / "2019-02-19.csv").write_bytes(
        (
            header
            + '2019-02-19,Debt collection,"A collector called me\nthree times a day.",101\n'
            + '02/19/2019,Mortgage,"My escrow went up.",102\n'  # the older MM/DD/YYYY export format
            + ',Mortgage,"No date: taken as the run date.",103\n'
            + '2019-02-20,Mortgage,"Wrong day.",104\n'
            + 'someday,Mortgage,"Not a date.",105\n'
            + '2019-02-19,Mortgage,"",106\n'
            + '2019-02-19,Mortgage,"Second copy.",101\n'
            + '2019-02-19,Mortgage,"Bad id.",10x\n'
        ).encode()
        + b'2019-02-19,Mortgage,"Caf\xe9.",107\n'
    )
    (landing / "2019-02-19_api.jsonl").write_bytes(
        b'{"complaint_id": "201", "date_received": "2019-02-19", "complaint_what_happened": "From the API."}\n'
        b'{"complaint_id": "101", "date_received": "2019-02-19", "complaint_what_happened": "Also in the CSV."}\n'
        b"not json\n"
        b"\n"
        b'{"complaint_id": "202", "complaint_what_happened": "Caf\xe9"}\n'
    )
    staged = stage_day(config, "2019-02-19", landing=str(landing))
    docs = pd.read_parquet(tmp_path / "ws" / "t" / "staged" / "date=2019-02-19" / "docs.parquet")
    rejects = pd.read_csv(
        tmp_path / "ws" / "t" / "staged" / "date=2019-02-19" / "rejects.csv", dtype=str, keep_default_na=False
    )
    assert sorted(docs["id"]) == [101, 102, 103, 201]
    assert docs.set_index("id").loc[101, "text"] == "A collector called me\nthree times a day."
    by_id = dict(zip(rejects["id"], rejects["reason"]))
    assert by_id["104"] == "Date received 2019-02-20 is not the run date 2019-02-19"
    assert by_id["105"] == "Date received is not a date"
    assert by_id["106"] == "empty narrative"
    assert by_id["10x"] == "id is not a whole number"
    assert by_id["107"] == "narrative has bytes that are not UTF-8"
    reasons = sorted(rejects["reason"])
    assert reasons.count("duplicate id (first occurrence kept)") == 2  # in the CSV, and across files
    assert any(r.startswith("not valid JSON") for r in reasons)
    assert "line has bytes that are not UTF-8" in reasons
    assert staged["n_docs"] == 4 and staged["n_rejected"] == len(rejects) == 9
    # JSON rejects carry the file's own line numbers.
    _, json_rejects = read_complaint_file(landing / "2019-02-19_api.jsonl", config)
    reasons_by_line = dict(zip(json_rejects["line"], json_rejects["reason"].str[:14]))
    assert reasons_by_line == {3: "not valid JSON", 5: "line has bytes"}
