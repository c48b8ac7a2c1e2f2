"""The DAG's ingest step (``ingest_round``) against a real SeaweedFS, on files written the
way spreadsheets write them: every row accounted for, and a re-run, a re-drop or a retry
after a failed move adds nothing to the store or the rejects log.
"""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest
from botocore.exceptions import ClientError
from openpyxl import load_workbook

from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS, LoopConfig
from al_tasks.errors import LabelFileError
from al_tasks.io import s3
from al_tasks.io.people_csv import FORMULA_TRIGGERS
from al_tasks.labelling.export import export_query_set
from al_tasks.labelling.inbox import export_round, ingest_round
from al_tasks.labelling.rejects import read_rejects
from al_tasks.workspace import TaskWorkspace

ID, TEXT, TRUTH = "Complaint ID", "Consumer complaint narrative", "Product group"
TASK = "t_ingest"


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    corpus = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, usecols=[ID, TEXT, TRUTH])
    return corpus.sample(40, random_state=3).reset_index(drop=True)


@pytest.fixture
def loop(seaweedfs, s3_prefix, tmp_path, sample):
    """(config, client) of a task whose round 1 query set is exported to the outbox."""
    config = LoopConfig(
        workspace=str(tmp_path / "ws"),
        task=TASK,
        bucket=seaweedfs.bucket,
        s3_endpoint_url=seaweedfs.endpoint_url,
        **{f"{name}_prefix": f"{s3_prefix}/{name}" for name in ("seed", "outbox", "inbox", "processed", "rejects")},
    )
    out = TaskWorkspace(config).round_dir(1)
    query_df = pd.DataFrame(
        {"id": sample[ID].astype("int64"), "text": sample[TEXT], "predicted_label": "other", "confidence": 0.5}
    )
    export_query_set(
        query_df,
        out / "query.csv",
        out / "manifest.json",
        round_number=1,
        model_version="1",
        strategy="margin",
        task=TASK,
        classes=PRODUCT_GROUPS,
    )
    client = seaweedfs.client()
    exported = export_round(client, config, 1, query_csv=str(out / "query.csv"), manifest=str(out / "manifest.json"))
    assert exported["query_xlsx_uri"].endswith(f"/outbox/{TASK}/round-1.xlsx")
    return config, client


def truth(sample) -> dict[str, str]:
    return dict(zip(sample[ID], sample[TRUTH]))


def labelled_csv(config, client, sample, *, delimiter=",", encoding="utf-8-sig") -> bytes:
    """The outbox's query set, labelled and saved as a spreadsheet does (CRLF), with two bad rows."""
    key = config.task_prefix("outbox_prefix") + "round-1.csv"
    frame = pd.read_csv(io.BytesIO(s3.read_bytes(client, config.bucket, key)), dtype=str, keep_default_na=False)
    frame.columns = [c.lstrip("\ufeff") for c in frame.columns]
    frame["label"] = frame["id"].map(truth(sample))
    frame.loc[3, "label"] = ""  # skipped
    frame.loc[4, "label"] = '=HYPERLINK("http://evil.example","x")'  # rejected, must never run
    frame.loc[5, "id"] = "9.82274E+08"  # a spreadsheet's number: rejected with a hint
    buffer = io.StringIO(newline="")
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n").writerows(
        [list(frame.columns), *frame.itertuples(index=False, name=None)]
    )
    return buffer.getvalue().encode(encoding, "replace")


def state(config) -> tuple[int, int]:
    """(history rows in the label store, rows in the rejects log)."""
    workspace = TaskWorkspace(config)
    return len(workspace.store.history()), len(read_rejects(workspace.rejects_path))


def drop(config, client, name: str, data: bytes) -> str:
    return s3.write_bytes(client, config.bucket, config.task_prefix("inbox_prefix") + name, data)


def no_formula_cells(frame: pd.DataFrame) -> bool:
    return not any(str(c).startswith(FORMULA_TRIGGERS) for c in frame.to_numpy().ravel())


@pytest.mark.parametrize(
    "name, delimiter, encoding",
    [("Round-1 (1).CSV", ",", "utf-8-sig"), ("round-1_labelled.csv", ";", "cp1252")],
    ids=["bom-crlf", "semicolons-cp1252"],
)
def test_ingest_counts_every_row_and_never_twice(loop, sample, name, delimiter, encoding):
    config, client = loop
    data = labelled_csv(config, client, sample, delimiter=delimiter, encoding=encoding)
    drop(config, client, name, data)
    summary = ingest_round(client, config, 1)
    assert summary["rows"] == 40 == summary["accepted"] + summary["skipped"] + summary["rejected"] + summary["blank"]
    assert (summary["accepted"], summary["skipped"], summary["rejected"]) == (37, 1, 2)
    assert summary["added_to_store"] == 37 and state(config) == (37, 2)
    assert summary["processed_uri"].endswith(f"/processed/{TASK}/{name}")

    rejects = read_rejects(TaskWorkspace(config).rejects_path)
    reasons = dict(zip(rejects["line"], rejects["reason"]))
    assert "format the id column as text" in reasons["7"] and "is not one of" in reasons["6"]
    bucket_rejects = pd.read_csv(
        io.BytesIO(s3.read_bytes(client, config.bucket, config.task_prefix("rejects_prefix") + "round-1.csv")),
        dtype=str,
        keep_default_na=False,
        encoding="utf-8-sig",
    )
    assert no_formula_cells(rejects) and no_formula_cells(bucket_rejects)
    assert "'=HYPERLINK" in set(rejects["label"].str[:11])

    # Cleared and re-run: read from processed/, nothing new.
    again = ingest_round(client, config, 1)
    assert again["re_run"] and again["added_to_store"] == 0 and state(config) == (37, 2)
    # The same file dropped again: nothing new either.
    drop(config, client, name, data)
    assert ingest_round(client, config, 1)["added_to_store"] == 0 and state(config) == (37, 2)


def test_a_labelled_workbook_is_ingested(loop, sample, tmp_path):
    config, client = loop
    local = tmp_path / "round-1.xlsx"
    s3.download_file(client, config.bucket, config.task_prefix("outbox_prefix") + "round-1.xlsx", local)
    workbook = load_workbook(local)
    for row in workbook.worksheets[0].iter_rows(min_row=2):
        row[5].value = truth(sample)[row[1].value]
    workbook.save(local)
    drop(config, client, "round-1.xlsx", local.read_bytes())
    summary = ingest_round(client, config, 1)
    assert (summary["accepted"], summary["rejected"], summary["added_to_store"]) == (40, 0, 40)
    assert TaskWorkspace(config).store.current()["id"].tolist() == sample[ID].tolist()


class MoveFailsOnce:
    """The real client, except that the first server-side copy (the move to processed/) fails."""

    def __init__(self, client):
        self.client, self.failed = client, False

    def copy_object(self, **kwargs):
        if not self.failed:
            self.failed = True
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "injected"}}, "CopyObject")
        return self.client.copy_object(**kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


def test_a_retry_after_the_move_failed_adds_nothing(loop, sample):
    config, client = loop
    drop(config, client, "round-1.csv", labelled_csv(config, client, sample))
    flaky = MoveFailsOnce(client)
    with pytest.raises(ClientError, match="injected"):
        ingest_round(flaky, config, 1)
    assert state(config) == (37, 2), "labels and rejects were stored before the move failed"
    retried = ingest_round(flaky, config, 1)
    assert not retried["re_run"] and retried["added_to_store"] == 0 and state(config) == (37, 2)
    assert s3.list_keys(client, config.bucket, config.task_prefix("inbox_prefix")) == []


def test_a_file_over_the_limit_is_refused_before_download(loop, sample):
    config, client = loop
    drop(config, client, "round-1.csv", b"id,label\r\n" + b"x" * 2_100_000)
    small = config.with_overrides({"max_label_file_mb": 2})
    with pytest.raises(LabelFileError) as info:
        ingest_round(client, small, 1)
    message = str(info.value)
    assert f"/inbox/{TASK}/round-1.csv: the file is 2.1 MB, over the limit of 2 MB" in message
    assert "clear the ingest task" in message
    assert not TaskWorkspace(config).labelled_file_path(1, "round-1.csv").exists(), "not downloaded"
    assert state(config) == (0, 0)
