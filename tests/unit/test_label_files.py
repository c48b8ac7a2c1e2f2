"""Labelled files as spreadsheets write them, on real CFPB rows: BOM and CRLF, semicolons
and Windows-1252, a real .xlsx, a workbook under a .csv name, NUL bytes, ids turned into
numbers, files over the limits. Every message names the file, the line and the problem;
every row is accounted for.
"""

from __future__ import annotations

import csv
import io
import shutil

import pandas as pd
import pytest
from openpyxl import load_workbook

from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS, LoopConfig
from al_tasks.errors import LabelFileError
from al_tasks.io.people_csv import FORMULA_TRIGGERS
from al_tasks.labelling.export import export_query_set
from al_tasks.labelling.ingest import read_labelled_file
from al_tasks.labelling.rejects import read_rejects, write_rejects

ID, TEXT, TRUTH = "Complaint ID", "Consumer complaint narrative", "Product group"
CLASSES = list(PRODUCT_GROUPS)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    corpus = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, usecols=[ID, TEXT, TRUTH])
    non_ascii = corpus[corpus[TEXT].str.contains("[’•]")]
    rows = pd.concat([corpus.drop(non_ascii.index).sample(26, random_state=11), non_ascii.head(4)])
    return rows.reset_index(drop=True)


@pytest.fixture
def query_set(tmp_path, sample):
    """(csv path, xlsx path, ids) of an exported round-1 query set of 30 real complaints."""
    query_df = pd.DataFrame(
        {
            "id": sample[ID].astype("int64").to_numpy(),
            "text": sample[TEXT].to_numpy(),
            "predicted_label": "credit_reporting",
            "confidence": 0.5,
        }
    )
    out = tmp_path / "outbox"
    manifest = export_query_set(
        query_df,
        out / "round-1.csv",
        out / "round-1.manifest.json",
        round_number=1,
        model_version="1",
        strategy="margin",
        task="t",
        classes=CLASSES,
    )
    return out / "round-1.csv", out / manifest["xlsx_file"], manifest["ids"]


def answered(csv_path, sample) -> pd.DataFrame:
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    frame["label"] = frame["id"].map(dict(zip(sample[ID], sample[TRUTH])))
    return frame


def spreadsheet_csv(frame: pd.DataFrame, *, delimiter=",", encoding="utf-8-sig") -> bytes:
    """What a spreadsheet writes: CRLF rows, quoted where needed, in its encoding."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(
        [list(frame.columns), *frame.itertuples(index=False, name=None)]
    )
    return buffer.getvalue().encode(encoding, "replace")


def accounted(result) -> bool:
    return len(result.accepted) + len(result.skipped) + len(result.rejects) + result.blank_rows == result.data_rows


def read(path, ids, **limits):
    return read_labelled_file(path, query_ids=ids, classes=CLASSES, source_name=f"s3://b/inbox/t/{path.name}", **limits)


# --- files spreadsheets write ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "delimiter, encoding",
    [(",", "utf-8-sig"), (";", "utf-8-sig"), (";", "cp1252"), ("\t", "utf-8")],
    ids=["bom-crlf", "semicolons", "semicolons-cp1252", "tabs"],
)
def test_spreadsheet_csv_variants_keep_every_label(tmp_path, query_set, sample, delimiter, encoding):
    csv_path, _, ids = query_set
    path = tmp_path / "Round-1 (1).CSV"
    path.write_bytes(spreadsheet_csv(answered(csv_path, sample), delimiter=delimiter, encoding=encoding))
    result = read(path, ids)
    assert result.rejects.empty and len(result.accepted) == 30 and accounted(result)
    assert sorted(result.accepted["id"]) == sorted(ids)
    if encoding == "cp1252":  # the narratives with ’ and • are bytes that are not UTF-8
        assert result.warnings == [
            "s3://b/inbox/t/Round-1 (1).CSV: column 'text' has bytes that are not valid UTF-8 on 4 row(s) "
            f"(first at line {result.warnings[0].split('line ')[1].split(')')[0]}); the column is not used, "
            "so no label is lost; save the file as 'CSV UTF-8'"
        ]
    else:
        assert result.warnings == []


def test_the_exported_workbook_is_made_for_spreadsheets(query_set):
    _, xlsx_path, ids = query_set
    workbook = load_workbook(xlsx_path)
    sheet = workbook.worksheets[0]
    header = [c.value for c in sheet[1]]
    assert header == ["rank", "id", "text", "model_guess", "confidence", "label"]
    id_cells = [row[1] for row in sheet.iter_rows(min_row=2)]
    assert [c.value for c in id_cells] == ids
    assert all(c.data_type == "s" and c.number_format == "@" for c in id_cells), "ids are text"
    assert all(row[2].alignment.wrap_text for row in sheet.iter_rows(min_row=2)), "text is wrapped"
    (validation,) = sheet.data_validations.dataValidation
    assert validation.type == "list" and str(validation.sqref) == f"F2:F{len(ids) + 1}"
    classes_sheet, cells = validation.formula1.lstrip("=").split("!")
    assert cells == f"$A$1:$A${len(CLASSES)}"
    assert workbook[classes_sheet].sheet_state == "hidden"
    assert [c.value for c in workbook[classes_sheet]["A"]] == CLASSES
    assert workbook.sheetnames[0] == "query set"


def test_a_filled_in_workbook_goes_through_the_same_checks(tmp_path, query_set, sample):
    _, xlsx_path, ids = query_set
    workbook = load_workbook(xlsx_path)
    sheet = workbook.worksheets[0]
    truth = dict(zip(sample[ID], sample[TRUTH]))
    for row in sheet.iter_rows(min_row=2):
        row[5].value = truth[row[1].value].upper()  # labels match case-insensitively
    sheet["F3"].value = None  # left blank: skipped
    sheet.cell(row=4, column=6, value="mortgages")  # not a class
    sheet.cell(row=5, column=2, value=float(ids[3]))  # an id typed over as a number: still that id
    path = tmp_path / "round-1_labelled.xlsx"
    workbook.save(path)

    result = read(path, ids)
    assert accounted(result) and result.data_rows == 30
    assert len(result.accepted) == 28 and result.skipped["line"].tolist() == [3]
    assert result.rejects[["line", "label"]].values.tolist() == [[4, "mortgages"]]
    assert "did you mean 'mortgage'?" in result.rejects["reason"].item()
    assert ids[3] in set(result.accepted["id"])


def test_a_workbook_saved_under_a_csv_name_says_so(tmp_path, query_set):
    _, xlsx_path, ids = query_set
    path = tmp_path / "round-1.csv"
    shutil.copy(xlsx_path, path)
    with pytest.raises(LabelFileError) as info:
        read(path, ids)
    message = str(info.value)
    assert message.startswith("s3://b/inbox/t/round-1.csv: line 1: this is an Excel workbook (.xlsx)")
    assert "save it as 'CSV UTF-8 (comma delimited)', or drop the workbook itself as round-<n>.xlsx" in message
    assert len(message) < 300 and "\\x" not in message


def test_nul_bytes_are_named(tmp_path, query_set, sample):
    csv_path, _, ids = query_set
    raw = spreadsheet_csv(answered(csv_path, sample))
    lines = raw.split(b"\r\n")
    lines[0] = lines[0].replace(b"label", b"\x00label")
    path = tmp_path / "round-1.csv"
    path.write_bytes(b"\r\n".join(lines))
    with pytest.raises(LabelFileError, match=r"round-1\.csv: line 1: the file has NUL bytes \(\\x00\)") as info:
        read(path, ids)
    assert "missing" not in str(info.value)
    utf16_without_bom = "id,label\r\n1,mortgage\r\n".encode("utf-16-le")
    path.write_bytes(utf16_without_bom)
    with pytest.raises(LabelFileError, match="line 1: the file has NUL bytes"):
        read(path, ids)


def test_ids_in_scientific_notation_get_a_hint(tmp_path, query_set):
    _, _, ids = query_set
    long_id = next(i for i in ids if len(i) >= 9)
    shown = f"{int(long_id):.5E}".replace("E+0", "E+")  # as a spreadsheet shows 982274417
    path = tmp_path / "round-1.csv"
    path.write_bytes(f"id;label\r\n{shown};mortgage\r\n{ids[0]};other\r\n".encode())
    result = read(path, ids)
    assert accounted(result) and result.accepted["id"].tolist() == [ids[0]]
    reason = result.rejects.set_index("line").loc[2, "reason"]
    assert reason.startswith(f"id '{shown}' is a number in scientific notation")
    assert "format the id column as text" in reason


def test_formula_cells_stay_in_the_rejects_but_never_run(tmp_path, query_set):
    _, _, ids = query_set
    path = tmp_path / "round-1.csv"
    path.write_bytes(f'id,label,note\r\n{ids[0]},=HYPERLINK("http://x"),+1\r\n@SUM(1),mortgage,-2\r\n'.encode())
    result = read(path, ids)
    log = tmp_path / "rejects.csv"
    assert write_rejects(result.rejects, log, source="s3://b/x", round_number=1, source_sha256=result.source_sha256)
    assert log.read_bytes().startswith(b"\xef\xbb\xbf") and b"\r\n" in log.read_bytes()
    stored = read_rejects(log)
    assert stored["label"].tolist() == ['\'=HYPERLINK("http://x")', "mortgage"]
    assert stored["id"].tolist() == [ids[0], "'@SUM(1)"] and stored["note"].tolist() == ["'+1", "'-2"]
    assert not any(str(c).startswith(FORMULA_TRIGGERS) for c in stored.to_numpy().ravel())


def test_rejects_log_adds_a_file_once_wherever_it_was_read_from(tmp_path, query_set):
    """A cleared re-run reads the file from processed/: its rejects are not added again."""
    _, _, ids = query_set
    path = tmp_path / "round-1.csv"
    path.write_bytes(f"id,label\r\n{ids[0]},nonsense\r\n999,mortgage\r\n".encode())
    result = read(path, ids)
    log = tmp_path / "labels" / "rejects.csv"
    sha = result.source_sha256
    assert write_rejects(result.rejects, log, source="s3://b/inbox/t/round-1.csv", round_number=1, source_sha256=sha)
    assert not write_rejects(
        result.rejects, log, source="s3://b/processed/t/round-1.csv", round_number=1, source_sha256=sha
    )
    assert len(read_rejects(log)) == 2
    # The same file as another round's answer is another record.
    assert write_rejects(result.rejects, log, source="s3://b/x", round_number=2, source_sha256=sha) == 2


def test_workspace_files_keep_one_mode(tmp_path, query_set):
    """The rejects log keeps the mode a plain new file gets (0o644 under umask 022), rewrite after rewrite."""
    _, _, ids = query_set
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = tmp_path / "round-1.csv"
    log = tmp_path / "rejects.csv"
    for round_number in (1, 2, 3):
        path.write_bytes(f"id,label\r\n{ids[0]},nonsense{round_number}\r\n".encode())
        result = read(path, ids)
        write_rejects(result.rejects, log, round_number=round_number, source_sha256=result.source_sha256)
        assert log.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert len(read_rejects(log)) == 3


# --- limits --------------------------------------------------------------------------------------------
def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, query_set):
    _, _, ids = query_set
    path = tmp_path / "round-1.csv"
    with open(path, "wb") as handle:
        handle.write(b"id,label\r\n")
        handle.truncate(3_000_000)  # 3 MB, mostly NUL bytes: reading it would say so
    with pytest.raises(LabelFileError) as info:
        read(path, ids, max_bytes=2_000_000)
    message = str(info.value)
    assert message.startswith("s3://b/inbox/t/round-1.csv: the file is 3.0 MB, over the limit of 2 MB")
    assert "max_label_file_mb" in message and "it was not read" in message


def test_a_file_over_the_row_limit_is_refused_while_it_is_read(tmp_path, query_set):
    _, _, ids = query_set
    path = tmp_path / "round-1.csv"
    path.write_bytes(b"id,label\r\n" + f"{ids[0]},mortgage\r\n".encode() * 1600)
    config = LoopConfig()
    assert config.label_file_row_limit(len(ids)) == 1500  # 50 x 30, at least 1000
    with pytest.raises(LabelFileError, match=r"round-1\.csv: line 1502: more than 1500 data rows"):
        read(path, ids, max_rows=config.label_file_row_limit(len(ids)))
    assert LoopConfig(max_label_file_rows=10).label_file_row_limit(30) == 10
    assert len(read(path, ids, max_rows=1600).rejects) == 1599  # duplicates of line 2


def test_a_large_workbook_is_refused_too(tmp_path, query_set):
    _, xlsx_path, ids = query_set
    with pytest.raises(LabelFileError, match=r"round-1\.xlsx: the file is 0\.\d MB, over the limit"):
        read(xlsx_path, ids, max_bytes=1000)
