"""The label store's pure rules, URL masking, and the embedded SQLite store (a file in tmp_path)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from al_tasks.config import LoopConfig, masked_url
from al_tasks.errors import LabelStoreError
from al_tasks.labelling.store import CsvLabelStore, latest_of, rows_to_append
from al_tasks.labelling.store_sql import SqlLabelStore
from al_tasks.workspace import TaskWorkspace


def test_a_row_repeating_the_current_label_of_the_same_round_adds_nothing():
    current = {"101": ("mortgage", 1), "102": ("mortgage", 0), "103": ("credit_card", 1)}
    ids, labels = rows_to_append(
        current, ["101", "102", "103", "104"], ["mortgage", "mortgage", "mortgage", "other"], round_number=1
    )
    # 101: same label, same round -> nothing; 102: confirmed in a later round -> history;
    # 103: relabelled -> history; 104: new.
    assert ids == ["102", "103", "104"] and labels == ["mortgage", "mortgage", "other"]
    assert rows_to_append({}, [], [], 3) == ([], [])


def test_latest_of_keeps_each_ids_last_row():
    history = pd.DataFrame({"id": ["1", "2", "1"], "label": ["a", "b", "c"], "round": [0, 0, 2]})
    assert latest_of(history) == {"1": ("c", 2), "2": ("b", 0)}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg2://al:example-pw@db.internal:5432/al_labels",
            "postgresql+psycopg2://al:***@db.internal:5432/al_labels",
        ),
        (
            "postgresql+psycopg2://postgres@127.0.0.1:5432/al_labels",
            "postgresql+psycopg2://postgres@127.0.0.1:5432/al_labels",
        ),
        ("sqlite:////work/ws/t/labels/store.db", "sqlite:////work/ws/t/labels/store.db"),
        ("", ""),
    ],
)
def test_urls_are_shown_with_the_password_masked(url, shown):
    assert masked_url(url) == shown


def test_an_unreachable_database_names_the_url_without_its_password():
    # Port 1 on the loopback refuses at once: no service is needed for this test.
    url = "postgresql+psycopg2://al:example-pw2@127.0.0.1:1/al_labels"
    with pytest.raises(LabelStoreError) as caught:
        SqlLabelStore(url, "t")
    assert "al:***@127.0.0.1:1/al_labels" in str(caught.value) and "example-pw2" not in str(caught.value)


def test_the_default_store_is_a_sqlite_file_in_the_task_folder(tmp_path):
    workspace = TaskWorkspace(LoopConfig(workspace=str(tmp_path), task="product_group"))
    assert workspace.label_store_url == f"sqlite:///{tmp_path.resolve()}/product_group/labels/store.db"
    labels = pd.DataFrame({"id": ["3353265", "3353266"], "label": ["mortgage", "other"]})
    assert workspace.store.append(labels, round_number=0, source="seed.csv", source_sha256="0" * 64) == 2
    assert workspace.sqlite_store_path.exists() and len(workspace.store) == 2
    assert not workspace.legacy_store_path.exists()
    # A task folder removed and started again (as tests and operators do): a fresh store.
    shutil.rmtree(workspace.root)
    assert len(workspace.store) == 0 and workspace.sqlite_store_path.exists()


def test_the_csv_store_keeps_the_same_rule(tmp_path):
    store = CsvLabelStore(tmp_path / "store.csv")
    labels = pd.DataFrame({"id": ["1", "2"], "label": ["a", "b"]})
    assert store.append(labels, round_number=1, source="f.csv", source_sha256="a" * 64) == 2
    assert store.append(labels, round_number=1, source="f copy.csv", source_sha256="b" * 64) == 0
    assert store.append(labels.assign(label=["a", "c"]), round_number=1, source="g", source_sha256="c" * 64) == 1
    assert store.history()["label"].tolist() == ["a", "b", "c"]
