"""Query-set export, labelled-file ingest, label store and inbox naming, on real CFPB rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re

import pandas as pd
import pytest

from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS
from al_tasks.errors import LabelFileError
from al_tasks.io.people_csv import FORMULA_TRIGGERS
from al_tasks.labelling.export import QUERY_CSV_COLUMNS, export_query_set
from al_tasks.labelling.ids import normalise_id
from al_tasks.labelling.inbox import (
    accepted_inbox_names,
    inbox_key_regex,
    match_inbox_key,
    matching_inbox_keys,
)
from al_tasks.labelling.ingest import read_labelled_file
from al_tasks.labelling.rejects import write_rejects
from al_tasks.labelling.store import CsvLabelStore

ID, TEXT, TRUTH = "Complaint ID", "Consumer complaint narrative", "Product group"
CLASSES = list(PRODUCT_GROUPS)


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    return pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, usecols=[ID, TEXT, TRUTH])


def make_query_df(rows: pd.DataFrame, round_number: int = 1) -> pd.DataFrame:
    """A query set as the query step produces it (ids as ints, ranked best first)."""
    n = len(rows)
    return pd.DataFrame(
        {
            "id": rows[ID].astype("int64").to_numpy(),
            "text": rows[TEXT].to_numpy(),
            "predicted_label": rows[TRUTH].to_numpy()[::-1],  # a model that is often wrong
            "confidence": [0.9 - 0.01 * i for i in range(n)],
            "score": [1.0 - 0.01 * i for i in range(n)],
            "strategy": "margin",
            "round": round_number,
        }
    )


@pytest.fixture(scope="module")
def sample(corpus) -> pd.DataFrame:
    """40 real complaints: 30 random ones plus every narrative that starts with '-' and
    every one with non-ASCII characters (’ and •)."""
    dashes = corpus[corpus[TEXT].str.startswith("-")]
    non_ascii = corpus[corpus[TEXT].str.contains(r"[^\x00-\x7f]")]
    rest = corpus.drop(dashes.index.union(non_ascii.index)).sample(32, random_state=7)
    rows = pd.concat([rest, dashes, non_ascii]).reset_index(drop=True)
    assert len(dashes) == 4 and len(non_ascii) == 4 and rows[ID].is_unique
    assert rows[TEXT].str.contains("\n").any()  # multi-line narratives are in the sample
    return rows


@pytest.fixture
def exported(tmp_path, sample):
    """(query_df, csv path, manifest) of an exported round-1 query set."""
    query_df = make_query_df(sample)
    manifest = export_query_set(
        query_df,
        tmp_path / "round-1.csv",
        tmp_path / "round-1.json",
        round_number=1,
        model_version="7",
        strategy="margin",
        task="product_group",
    )
    return query_df, tmp_path / "round-1.csv", manifest


def read_query_csv(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")


def labelled_csv(path, frame: pd.DataFrame, encoding: str = "utf-8-sig") -> None:
    frame.to_csv(path, index=False, encoding=encoding)


def truth_of(sample: pd.DataFrame) -> dict[str, str]:
    return dict(zip(sample[ID], sample[TRUTH]))


# --- export -------------------------------------------------------------------------------------
def test_export_neutralises_formulas_and_round_trips_through_pandas(tmp_path, sample):
    query_df = make_query_df(sample)
    crafted = {
        0: '=HYPERLINK("http://evil.example","click") ' + query_df.loc[0, "text"],
        1: "+1+2 " + query_df.loc[1, "text"],
        2: "-2+3 " + query_df.loc[2, "text"],
        3: "@SUM(A1:A2) " + query_df.loc[3, "text"],
        4: "\t=1+1 " + query_df.loc[4, "text"],
        5: "\r=1+1 " + query_df.loc[5, "text"],
    }
    for row, text in crafted.items():
        query_df.loc[row, "text"] = text
    query_df.loc[6, "predicted_label"] = "=cmd|' /C calc'!A0"  # a poisoned label cell too
    original = query_df.copy()

    manifest = export_query_set(
        query_df,
        tmp_path / "out" / "round-3.csv",
        tmp_path / "out" / "round-3.json",
        round_number=3,
        model_version="12",
        strategy="margin",
        task="product_group",
    )
    raw = (tmp_path / "out" / "round-3.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf" + b"rank,id,text,model_guess,confidence,label\r\n")

    back = read_query_csv(tmp_path / "out" / "round-3.csv")
    assert list(back.columns) == list(QUERY_CSV_COLUMNS)
    assert back["rank"].tolist() == [str(i) for i in range(1, len(query_df) + 1)]
    assert back["id"].tolist() == [str(i) for i in original["id"]]
    assert (back["label"] == "").all()
    for row, text in crafted.items():
        assert back.loc[row, "text"] == "'" + text
    assert back.loc[6, "model_guess"] == "'=cmd|' /C calc'!A0"
    # The 4 real narratives that start with '-' are neutralised, every other text is intact
    # (newlines, quotes, commas, ’ and • included).
    dash_rows = original.index[original["text"].str.startswith("-")].difference(list(crafted))
    assert len(dash_rows) == 4
    for row in range(len(original)):
        if row in crafted:
            continue
        expected = original.loc[row, "text"]
        expected = "'" + expected if row in dash_rows else expected
        assert back.loc[row, "text"] == expected
    # No cell of the file starts like a formula.
    for record in csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")):
        assert not any(cell.startswith(FORMULA_TRIGGERS) for cell in record)

    assert manifest["csv_sha256"] == hashlib.sha256(raw).hexdigest()
    assert manifest["round"] == 3 and manifest["task"] == "product_group"
    assert manifest["model_version"] == "12" and manifest["strategy"] == "margin"
    assert manifest["counts"]["items"] == len(query_df)
    assert manifest["counts"]["neutralised_cells"] == len(crafted) + 4 + 1
    assert manifest["ids"] == [str(i) for i in original["id"]]
    assert json.loads((tmp_path / "out" / "round-3.json").read_text()) == manifest


def test_export_refuses_duplicate_ids_and_missing_columns(tmp_path, sample):
    query_df = make_query_df(sample.head(5))
    twice = pd.concat([query_df, query_df.head(1)])
    with pytest.raises(ValueError, match="same id more than once"):
        export_query_set(
            twice,
            tmp_path / "a.csv",
            tmp_path / "a.json",
            round_number=1,
            model_version="1",
            strategy="margin",
            task="t",
        )
    with pytest.raises(ValueError, match="predicted_label"):
        export_query_set(
            query_df.drop(columns="predicted_label"),
            tmp_path / "b.csv",
            tmp_path / "b.json",
            round_number=1,
            model_version="1",
            strategy="margin",
            task="t",
        )
    assert not (tmp_path / "a.csv").exists() and not (tmp_path / "b.csv").exists()


# --- ingest: good files ------------------------------------------------------------------------------
def test_labelled_export_is_accepted_whole(tmp_path, exported, sample):
    query_df, path, _ = exported
    labelled = read_query_csv(path)
    labelled["label"] = [truth_of(sample)[i] for i in labelled["id"]]
    labelled_csv(tmp_path / "round-1 (1).csv", labelled)

    result = read_labelled_file(tmp_path / "round-1 (1).csv", query_ids=query_df["id"], classes=CLASSES)
    assert result.rejects.empty and result.skipped.empty
    assert result.accepted["id"].tolist() == [str(i) for i in query_df["id"]]
    assert result.accepted["label"].tolist() == sample[TRUTH].tolist()
    assert result.source_sha256 == hashlib.sha256((tmp_path / "round-1 (1).csv").read_bytes()).hexdigest()
    assert result.summary()["accepted"] == len(sample)


def test_spreadsheet_quirks_are_tolerated(tmp_path, sample):
    """Float ids, odd header case and spacing, label case and padding, blank label cells,
    extra columns, trailing empty rows, CRLF, semicolons."""
    ids = sample[ID].tolist()[:4]
    text = (
        "\ufeff Rank ;  ID ; Label ;notes\r\n"
        f"1;{ids[0]}.0; Credit_Card ;checked twice\r\n"
        f"2;'{ids[1]}; mortgage;\r\n"
        f"3;{ids[2]};   ;not sure\r\n"
        f"4; {ids[3]} ;DEBT_COLLECTION;\r\n"
        ";;;\r\n"
        ";;;\r\n"
    )
    path = tmp_path / "Round-1.CSV"
    path.write_bytes(text.encode("utf-8"))
    result = read_labelled_file(path, query_ids=[int(i) for i in ids], classes=CLASSES)
    assert result.rejects.empty
    assert result.accepted.to_dict("list") == {
        "id": [ids[0], ids[1], ids[3]],
        "label": ["credit_card", "mortgage", "debt_collection"],
    }
    assert result.skipped.to_dict("list") == {"line": [4], "id": [ids[2]]}
    assert result.blank_rows == 2 and result.data_rows == 6


@pytest.mark.parametrize(
    "value, expected",
    [
        (3353265, "3353265"),
        ("3353265", "3353265"),
        (" 3353265.0 ", "3353265"),
        (3353265.0, "3353265"),
        ("'3353265", "3353265"),
        ("3353265.5", "3353265.5"),
        ("abc", "abc"),
    ],
)
def test_normalise_id(value, expected):
    assert normalise_id(value) == expected


# --- ingest: bad files --------------------------------------------------------------------------------
def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


@pytest.mark.parametrize(
    "header, missing",
    [
        ("rank,id,text,model_guess,confidence", "'label'"),
        ("rank,ident,text,label", "'id'"),
        ("rank,text,answer", "'id', 'label'"),
    ],
)
def test_wrong_header_names_file_and_missing_columns(tmp_path, header, missing):
    path = write(tmp_path, "round-2.csv", header + "\n1,2,3,4,5\n")
    with pytest.raises(LabelFileError) as info:
        read_labelled_file(path, query_ids=["2"], classes=CLASSES)
    message = str(info.value)
    assert str(path) in message and "line 1" in message and f"missing {missing}" in message


@pytest.mark.parametrize(
    "content",
    [b"", b"\xef\xbb\xbf", b"rank,id,text,model_guess,confidence,label\r\n", b"\xef\xbb\xbfid,label\n,\n , \n"],
    ids=["zero-bytes", "bom-only", "header-only", "header-and-blank-rows"],
)
def test_empty_file_has_no_rows(tmp_path, content):
    path = write(tmp_path, "round-1.csv", content)
    with pytest.raises(LabelFileError, match=r"round-1\.csv: has no rows"):
        read_labelled_file(path, query_ids=["1"], classes=CLASSES, source_name="s3://b/inbox/t/round-1.csv")
    with pytest.raises(LabelFileError, match=re.escape("s3://b/inbox/t/round-1.csv")):
        read_labelled_file(path, query_ids=["1"], classes=CLASSES, source_name="s3://b/inbox/t/round-1.csv")


def test_unknown_ids_and_bad_labels_are_rejected_with_line_and_reason(tmp_path, sample):
    ids = sample[ID].tolist()[:3]
    path = write(
        tmp_path,
        "round-1.csv",
        "id,label\n"
        f"{ids[0]},mortgage\n"
        "99999999999,mortgage\n"  # line 3: not in the query set
        f"{ids[1]},credit card\n"  # line 4: space instead of underscore
        f"{ids[2]},Mortgages\n"  # line 5: not a class
        ",mortgage\n",  # line 6: no id
    )
    result = read_labelled_file(path, query_ids=ids, classes=CLASSES)
    assert result.accepted.to_dict("list") == {"id": [ids[0]], "label": ["mortgage"]}
    reasons = dict(zip(result.rejects["line"], result.rejects["reason"]))
    assert set(reasons) == {3, 4, 5, 6}
    assert reasons[3] == "unknown id '99999999999': not in this round's query set"
    assert reasons[4].startswith("label 'credit card' is not one of [bank_account, consumer_loan,")
    assert "did you mean 'credit_card'?" in reasons[4]
    assert "label 'Mortgages' is not one of" in reasons[5]
    assert reasons[6] == "no id"
    # Rejected rows keep what the labeller wrote.
    assert result.rejects.set_index("line").loc[4, "label"] == "credit card"


def test_duplicate_rows_keep_the_first(tmp_path, sample):
    ids = sample[ID].tolist()[:2]
    path = write(
        tmp_path,
        "round-1.csv",
        f"id,label\n{ids[0]},mortgage\n{ids[1]},other\n{ids[0]}.0, MORTGAGE\n{ids[0]},\n",
    )
    result = read_labelled_file(path, query_ids=ids, classes=CLASSES)
    assert result.accepted.to_dict("list") == {"id": [ids[0], ids[1]], "label": ["mortgage", "other"]}
    assert result.rejects["line"].tolist() == [4, 5]
    assert result.rejects["reason"].tolist()[0] == "duplicate of line 2 (same id and label)"
    assert result.rejects["reason"].tolist()[1].startswith("duplicate of line 2")
    assert result.skipped.empty


def test_conflicting_labels_reject_every_row_of_the_id(tmp_path, sample):
    ids = sample[ID].tolist()[:3]
    path = write(
        tmp_path,
        "round-1.csv",
        f"id,label\n{ids[0]},mortgage\n{ids[1]},other\n{ids[0]},credit_card\n{ids[0]},mortgage\n"
        f"{ids[0]},\n{ids[2]},student_loan\n",
    )
    result = read_labelled_file(path, query_ids=ids, classes=CLASSES)
    assert ids[0] not in set(result.accepted["id"]) | set(result.skipped["id"])
    assert result.accepted["id"].tolist() == [ids[1], ids[2]]
    conflict = result.rejects[result.rejects["id"] == ids[0]]
    assert conflict["line"].tolist() == [2, 4, 5, 6]
    assert conflict["reason"].str.startswith(f"conflicting labels for id '{ids[0]}'").all()
    assert "'credit_card' (line 4)" in conflict["reason"].iloc[0]


def test_non_utf8_bytes_in_an_ignored_column_cost_no_label(tmp_path, exported, sample):
    """Excel's plain 'CSV' save writes Windows-1252: the real narratives with ’ and •
    become bytes that are not UTF-8. The text column is not used: every label is kept,
    and a warning names the column."""
    query_df, path, _ = exported
    labelled = read_query_csv(path)
    labelled["label"] = [truth_of(sample)[i] for i in labelled["id"]]
    labelled_csv(tmp_path / "round-1.csv", labelled, encoding="cp1252")

    result = read_labelled_file(tmp_path / "round-1.csv", query_ids=query_df["id"], classes=CLASSES)
    assert result.rejects.empty and len(result.accepted) == len(sample)
    assert len(result.warnings) == 1
    assert "column 'text' has bytes that are not valid UTF-8 on 4 row(s)" in result.warnings[0]
    assert "no label is lost" in result.warnings[0]


def test_non_utf8_bytes_in_the_label_reject_the_row(tmp_path):
    path = write(tmp_path, "round-1.csv", b"id,label\n1,mortgage\n2,cr\xe9dit\n")
    result = read_labelled_file(path, query_ids=["1", "2"], classes=CLASSES)
    assert result.accepted["id"].tolist() == ["1"]
    assert result.rejects["label"].tolist() == ["cr\\xe9dit"]
    assert "not valid UTF-8 in column(s) label" in result.rejects["reason"].item()


def test_undecodable_header_of_an_ignored_column_is_a_warning(tmp_path):
    path = write(tmp_path, "round-1.csv", b"id,label,r\xe9sum\xe9\n1,mortgage,x\n")
    result = read_labelled_file(path, query_ids=["1"], classes=CLASSES)
    assert result.accepted["label"].tolist() == ["mortgage"]
    broken = write(tmp_path, "round-3.csv", b"id,l\xe1bel\n1,mortgage\n")
    with pytest.raises(LabelFileError, match=r"round-3\.csv: line 1: .*missing 'label'.*not valid UTF-8"):
        read_labelled_file(broken, query_ids=["1"], classes=CLASSES)
    utf16 = write(tmp_path, "round-2.csv", "id,label\n1,mortgage\n".encode("utf-16"))
    with pytest.raises(LabelFileError, match=r"round-2\.csv: line 1: the file is UTF-16"):
        read_labelled_file(utf16, query_ids=["1"], classes=CLASSES)


def test_broken_quoting_names_the_line(tmp_path):
    path = write(tmp_path, "round-1.csv", 'id,label,text\n1,mortgage,"ok"\n2,other,"never closed\n3,other,x\n')
    with pytest.raises(LabelFileError, match=r"round-1\.csv: line 3: broken CSV quoting"):
        read_labelled_file(path, query_ids=["1", "2", "3"], classes=CLASSES)


def test_nothing_is_lost(tmp_path, exported, sample):
    """A messy real file: every data row ends up accepted, skipped, rejected or counted
    blank, exactly once, and write_rejects keeps every rejected row."""
    query_df, path, _ = exported
    labelled = read_query_csv(path)
    truth = truth_of(sample)
    labelled["label"] = [truth[i] for i in labelled["id"]]
    labelled.loc[2, "label"] = ""  # skipped
    labelled.loc[3, "label"] = "  "  # skipped
    labelled.loc[4, "label"] = "not_a_class"  # rejected
    labelled.loc[5, "id"] = "123"  # rejected: unknown
    extra = labelled.iloc[[6, 7, 8]].copy()
    extra.loc[extra.index[0], "label"] = labelled.loc[6, "label"]  # duplicate
    extra.loc[extra.index[1], "label"] = "other" if labelled.loc[7, "label"] != "other" else "mortgage"  # conflict
    extra.loc[extra.index[2], "label"] = ""  # blank duplicate of labelled
    messy = pd.concat([labelled, extra], ignore_index=True)
    body = messy.to_csv(index=False, lineterminator="\r\n")
    body += ",,,,,\r\n"  # spreadsheet's empty row
    body += f"99,{labelled.loc[9, 'id']},x,y,0.5,{labelled.loc[9, 'label']},surplus cell\r\n"  # dup + extra cell
    raw = ("\ufeff" + body).encode("utf-8")
    raw += f"98,{labelled.loc[10, 'id']},caf\xe9 latin-1,y,0.5,{labelled.loc[10, 'label']}\r\n".encode("latin-1")
    path_in = tmp_path / "round-1_labelled.csv"
    path_in.write_bytes(raw)

    result = read_labelled_file(path_in, query_ids=query_df["id"], classes=CLASSES)
    data_rows = len(messy) + 3
    assert result.data_rows == data_rows and result.blank_rows == 1
    assert len(result.accepted) + len(result.skipped) + len(result.rejects) + result.blank_rows == data_rows
    lines = list(result.skipped["line"]) + list(result.rejects["line"])
    assert len(lines) == len(set(lines))
    assert sorted(result.skipped["line"]) == [4, 5]
    # 6 bad label, 7 unknown id, 9+43 conflict, 42 duplicate, 44 blank duplicate,
    # 46 duplicate with a surplus cell, 47 Latin-1 bytes; 45 is the empty row.
    assert sorted(result.rejects["line"]) == [6, 7, 9, 42, 43, 44, 46, 47]
    assert len(result.accepted) == 35
    assert result.accepted["id"].is_unique
    assert not set(result.accepted["id"]) & set(result.skipped["id"])
    assert result.rejects.loc[result.rejects["line"] == 46, "extra_1"].item() == "surplus cell"

    rejects_path = tmp_path / "rejects" / "rejects.csv"
    assert write_rejects(result.rejects, rejects_path, source="s3://b/inbox/t/round-1_labelled.csv") == 8
    assert write_rejects(result.rejects, rejects_path, source="s3://b/inbox/t/round-1_labelled.csv") == 0
    stored = pd.read_csv(rejects_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert len(stored) == 8 and (stored["source"] == "s3://b/inbox/t/round-1_labelled.csv").all()
    assert sorted(stored["line"].astype(int)) == sorted(result.rejects["line"])
    assert stored.loc[stored["line"] == "47", "text"].item() == "caf\\xe9 latin-1"
    # A later file with other columns is appended, nothing is dropped.
    other = pd.DataFrame({"line": [2], "id": ["5"], "label": ["x"], "reason": ["no id"], "note": ["n"]})
    assert write_rejects(other, rejects_path, source="round-2.csv") == 1
    stored = pd.read_csv(rejects_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert len(stored) == 9 and stored["note"].tolist()[-1] == "n"


# --- label store -------------------------------------------------------------------------------------------
def test_label_store_is_append_only_idempotent_and_latest_wins(tmp_path, exported, sample):
    query_df, path, _ = exported
    labelled = read_query_csv(path)
    labelled["label"] = [truth_of(sample)[i] for i in labelled["id"]]
    labelled_csv(tmp_path / "round-1.csv", labelled)
    result = read_labelled_file(tmp_path / "round-1.csv", query_ids=query_df["id"], classes=CLASSES)

    store = CsvLabelStore(tmp_path / "store" / "labels.csv")
    assert store.current().empty and store.ids() == set()
    source = "s3://labelling/inbox/product_group/round-1.csv"
    assert store.append(result.accepted, round_number=1, source=source, source_sha256=result.source_sha256) == 40
    # A retried task appends the same file again: nothing is counted twice.
    assert store.append(result.accepted, round_number=1, source=source, source_sha256=result.source_sha256) == 0
    assert len(store.history()) == 40 and len(store) == 40
    assert store.ids() == {str(i) for i in query_df["id"]}

    # A corrected file (different bytes) relabels one item: the latest label wins.
    first_id = str(query_df["id"].iloc[0])
    old_label = result.accepted.set_index("id").loc[first_id, "label"]
    new_label = "other" if old_label != "other" else "mortgage"
    corrected = pd.DataFrame({"id": [first_id], "label": [new_label]})
    assert store.append(corrected, round_number=1, source=source, source_sha256="f" * 64) == 1
    current = store.current().set_index("id")["label"]
    assert len(current) == 40 and current[first_id] == new_label
    history = store.history()
    assert len(history) == 41 and list(history.columns) == [
        "id",
        "label",
        "round",
        "source",
        "source_sha256",
        "labelled_at",
    ]
    assert history["round"].dtype == "int64"
    assert history[history["id"] == first_id]["label"].tolist() == [old_label, new_label]
    # Written atomically: no temp files left next to the store.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["labels.csv", "labels.csv.lock"]
    with pytest.raises(ValueError, match="more than once"):
        store.append(
            pd.DataFrame({"id": ["1", "1.0"], "label": ["a", "a"]}), round_number=2, source="x", source_sha256="0" * 64
        )


# --- inbox naming ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("round_number", [1, 3, 10])
def test_inbox_names_spreadsheets_produce_are_accepted(round_number):
    names = accepted_inbox_names(round_number)
    assert f"round-{round_number}.csv" in names and len(names) >= 7
    regex = inbox_key_regex(round_number, prefix="inbox/product_group/")
    for name in names:
        key = f"inbox/product_group/{name}"
        assert match_inbox_key(key, round_number), name
        assert re.match(regex, key), name


@pytest.mark.parametrize(
    "name, round_number",
    [
        ("round-10.csv", 1),
        ("round-1.csv", 10),
        ("round-11 (1).csv", 1),
        ("round-2.csv", 1),
        ("round-1.xls", 1),
        ("round-1.xlsx.tmp", 1),
        ("~$round-1.xlsx", 1),
        ("round-1-old/notes.csv", 1),
        ("round-1/round-1.csv", 1),
        ("round-1.csv.tmp", 1),
        ("~$round-1.csv", 1),
        (".~lock.round-1.csv#", 1),
        ("labelled-round-1.csv", 1),
        ("round-1", 1),
        ("round1.csv", 1),
        ("round-01.csv", 1),
    ],
)
def test_inbox_names_of_other_rounds_and_files_are_not(name, round_number):
    key = f"inbox/product_group/{name}"
    assert not match_inbox_key(key, round_number, "inbox/product_group/")
    assert not re.match(inbox_key_regex(round_number, "inbox/product_group/"), key)


def test_the_sensor_pattern_is_the_ingest_rule():
    """The sensor fires only on keys the ingest takes: never a file in a sub-folder, of
    another round or another task."""
    regex = inbox_key_regex(1, prefix="inbox/t/")
    keys = [
        "inbox/t/round-10.csv",
        "inbox/t/Round-1 (1).CSV",
        "inbox/t/round-1.json",
        "inbox/t/round-1-old/notes.csv",
        "inbox/t/round-1.xlsx",
        "inbox/other/round-1.csv",
        "inbox/t/sub/round-1.csv",
    ]
    sensed = [k for k in keys if re.match(regex, k)]
    assert sensed == matching_inbox_keys([k for k in keys if k.startswith("inbox/t/")], 1, "inbox/t/")
    assert sensed == ["inbox/t/Round-1 (1).CSV", "inbox/t/round-1.xlsx"]


@pytest.mark.parametrize("prefix", ["inbox/product_group/", "a/b.c/t-1/", "x_y/"])
def test_the_sensor_lists_only_the_task_inbox(prefix):
    from al_tasks.labelling.inbox import regex_literal_prefix

    assert regex_literal_prefix(inbox_key_regex(4, prefix)) == prefix


def test_outages_are_told_from_errors_a_retry_cannot_fix():
    from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

    from al_tasks.io.s3 import is_transient_error

    def client_error(code, status):
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "ListObjectsV2")

    assert is_transient_error(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient_error(ReadTimeoutError(endpoint_url="http://127.0.0.1:1"))
    assert is_transient_error(ConnectionRefusedError(111, "refused"))
    assert is_transient_error(client_error("SlowDown", 503)) and is_transient_error(client_error("X", 502))
    assert not is_transient_error(client_error("AccessDenied", 403))
    assert not is_transient_error(client_error("NoSuchBucket", 404))
    assert not is_transient_error(FileNotFoundError("x")) and not is_transient_error(ValueError("x"))
