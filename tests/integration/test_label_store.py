"""The label store on both backends: SQLite (a file in tmp_path) and the machine's PostgreSQL.

Labels come from real CFPB rows, through the same parser the DAG's ingest step uses
(:func:`~al_tasks.labelling.ingest.read_labelled_file`), written the way spreadsheets
write them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import stat
import threading
import uuid

import pandas as pd
import pytest

from al_tasks.cli import main
from al_tasks.config import PRODUCT_GROUPS, SHIPPED_CORPUS, LoopConfig
from al_tasks.io.people_csv import FORMULA_TRIGGERS
from al_tasks.labelling.ingest import read_labelled_file
from al_tasks.labelling.rejects import write_rejects
from al_tasks.labelling.store import STORE_COLUMNS, CsvLabelStore
from al_tasks.labelling.store_sql import SqlLabelStore, migrate_csv_store
from al_tasks.workspace import TaskWorkspace

ID, TRUTH = "Complaint ID", "Product group"
CLASSES = list(PRODUCT_GROUPS)


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    """``id``, ``label`` of 400 real complaints (the ground-truth product group)."""
    frame = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False, usecols=[ID, TRUTH])
    frame = frame.sample(400, random_state=3).reset_index(drop=True)
    return pd.DataFrame({"id": frame[ID], "label": frame[TRUTH]})


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'store.db'}"
    return request.getfixturevalue("postgres_label_store_url")


@pytest.fixture
def task() -> str:
    """A task of its own: the PostgreSQL database is shared by the session's tests."""
    return f"t{uuid.uuid4().hex[:8]}"


def parsed(path, frame: pd.DataFrame, query_ids, **to_csv):
    """``frame`` written as a labelled CSV at ``path``, then read back as ingest reads it."""
    frame.to_csv(path, index=False, **to_csv)
    return read_labelled_file(path, query_ids=query_ids, classes=CLASSES)


def append(store, result, round_number: int, name: str) -> int:
    source = f"s3://labelling/inbox/t/{name}"
    return store.append(result.accepted, round_number=round_number, source=source, source_sha256=result.source_sha256)


# --- the guarantees ---------------------------------------------------------------------------
def test_append_retry_history_and_latest_wins(store_url, task, truth, tmp_path):
    store = SqlLabelStore(store_url, task)
    assert store.current().empty and store.ids() == set() and len(store) == 0
    answers = truth.head(40)
    first = parsed(tmp_path / "round-1.csv", answers, answers["id"], encoding="utf-8-sig")
    assert append(store, first, 1, "round-1.csv") == 40
    # A retried ingest of the same file adds nothing.
    assert append(store, first, 1, "round-1.csv") == 0
    assert len(store.history()) == 40 and len(store) == 40 and store.ids() == set(answers["id"])

    # A corrected file relabels two items: two new rows, the latest label wins, history kept.
    corrected = answers.copy()
    changed = corrected["id"].iloc[:2].tolist()
    corrected.loc[:1, "label"] = ["other" if v != "other" else "mortgage" for v in corrected["label"].iloc[:2]]
    second = parsed(tmp_path / "round-1 (2).csv", corrected, answers["id"])
    assert append(store, second, 1, "round-1 (2).csv") == 2
    history = store.history()
    assert list(history.columns) == list(STORE_COLUMNS) and history["round"].dtype == "int64" and len(history) == 42
    for item in changed:
        old, new = answers.set_index("id").loc[item, "label"], corrected.set_index("id").loc[item, "label"]
        assert history.loc[history["id"] == item, "label"].tolist() == [old, new]
        assert store.current().set_index("id").loc[item, "label"] == new
    # Round 2 relabels an item back: training for round 2 still sees round 1's label.
    back = pd.DataFrame({"id": [changed[0]], "label": [answers["label"].iloc[0]]})
    assert store.append(back, round_number=2, source="r2", source_sha256="2" * 64) == 1
    before_two = store.training_labels(before_round=2).set_index("id")["label"]
    assert before_two[int(changed[0])] == corrected["label"].iloc[0] and len(before_two) == 40
    assert store.training_labels().set_index("id")["label"][int(changed[0])] == answers["label"].iloc[0]
    with pytest.raises(ValueError, match="more than once"):
        twice = pd.DataFrame({"id": ["1", "1.0"], "label": ["a", "a"]})
        store.append(twice, round_number=3, source="x", source_sha256="x")


def test_a_re_encoded_copy_of_the_same_answers_adds_nothing(store_url, task, truth, tmp_path):
    store = SqlLabelStore(store_url, task)
    answers = truth.head(30)
    original = parsed(tmp_path / "round-1.csv", answers, answers["id"])
    # "Save as" in a spreadsheet: a BOM, CRLF rows, another name -- other bytes, same labels.
    copy = parsed(tmp_path / "round-1 copy.csv", answers, answers["id"], encoding="utf-8-sig", lineterminator="\r\n")
    assert copy.source_sha256 != original.source_sha256
    assert append(store, original, 1, "round-1.csv") == 30
    assert append(store, copy, 1, "round-1 copy.csv") == 0
    assert len(store.history()) == 30
    # The same labels in a later round are new history (a label confirmed again).
    assert append(store, copy, 2, "round-2.csv") == 30
    # A correction, then a retry of the copy: the copy was recorded, it does not revert it.
    fix = pd.DataFrame({"id": [answers["id"].iloc[0]], "label": ["other"]})
    assert store.append(fix, round_number=2, source="fix", source_sha256="f" * 64) == 1
    assert append(store, copy, 2, "round-2.csv") == 0
    assert store.current().set_index("id").loc[answers["id"].iloc[0], "label"] == "other"


def test_tasks_share_a_database_but_not_labels(store_url, task, truth):
    first, second = SqlLabelStore(store_url, task), SqlLabelStore(store_url, task + "-b")
    assert first.append(truth.head(10), round_number=0, source="seed", source_sha256="s" * 64) == 10
    # The same file for another task is that task's own append.
    assert second.append(truth.head(10), round_number=0, source="seed", source_sha256="s" * 64) == 10
    assert second.append(truth.iloc[10:15], round_number=1, source="r1", source_sha256="r" * 64) == 5
    assert len(first) == 10 and len(second) == 15 and len(SqlLabelStore(store_url, task + "-c")) == 0


def test_two_concurrent_ingests_lose_nothing(store_url, task, truth):
    """Two workers append 10 files each at once (overlapping ids); every row lands once."""
    store_a, store_b = SqlLabelStore(store_url, task), SqlLabelStore(store_url, task)
    files = [truth.iloc[i * 20 : i * 20 + 30] for i in range(20)]  # neighbours share 10 ids
    start, errors, added = threading.Barrier(2), [], {}

    def worker(store, indexes):
        start.wait()
        for i in indexes:
            try:
                added[i] = store.append(files[i], round_number=1, source=f"f{i}", source_sha256=f"{i:064d}")
            except Exception as exc:  # reported below
                errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(store_a, range(0, 20, 2))),
        threading.Thread(target=worker, args=(store_b, range(1, 20, 2))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors and len(added) == 20
    history = store_a.history()
    # Overlapping ids carry the same (true) label in the same round: only the first adds a row.
    assert len(history) == sum(added.values()) == len(pd.concat(files)["id"].unique())
    assert store_a.current().set_index("id")["label"].to_dict() == dict(zip(truth["id"], truth["label"]))


def append_files_in_a_process(url: str, task: str, files: list[pd.DataFrame], indexes: list[int]) -> dict:
    """A worker process's ingests (module level, so a spawned process can run it)."""
    store = SqlLabelStore(url, task)
    return {i: store.append(files[i], round_number=1, source=f"f{i}", source_sha256=f"{i:064d}") for i in indexes}


def test_two_worker_processes_ingesting_at_once_lose_nothing(store_url, task, truth):
    """As two Celery workers would: separate processes, each with its own connections."""
    files = [truth.iloc[i * 25 : i * 25 + 25] for i in range(16)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(2) as pool:
        jobs = [
            pool.apply_async(append_files_in_a_process, (store_url, task, files, list(range(k, 16, 2)))) for k in (0, 1)
        ]
        added = {i: n for job in jobs for i, n in job.get(timeout=180).items()}
    assert added == dict.fromkeys(range(16), 25)
    history = SqlLabelStore(store_url, task).history()
    assert len(history) == 400 and set(history["id"]) == set(truth["id"])


def test_the_same_file_ingested_twice_at_once_is_added_once(store_url, task, truth):
    results, start = [], threading.Barrier(4)

    def worker():
        start.wait()
        store = SqlLabelStore(store_url, task)
        results.append(store.append(truth.head(50), round_number=1, source="same", source_sha256="e" * 64))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == [0, 0, 0, 50] and len(SqlLabelStore(store_url, task).history()) == 50


# --- migration, export ------------------------------------------------------------------------
def old_csv_store(path, truth, tmp_path) -> CsvLabelStore:
    """A CSV store as the previous versions wrote it: a seed, round 1 and a correction."""
    csv_store = CsvLabelStore(path)
    csv_store.append(truth.head(100), round_number=0, source="seed.csv", source_sha256="0" * 64)
    answers = truth.iloc[100:140]
    result = parsed(tmp_path / "round-1.csv", answers, answers["id"], encoding="utf-8-sig")
    append(csv_store, result, 1, "round-1.csv")
    fix = pd.DataFrame({"id": [answers["id"].iloc[0]], "label": ["other"]})
    csv_store.append(fix, round_number=1, source="round-1 (2).csv", source_sha256="1" * 64)
    return csv_store


def test_migration_from_a_csv_store_is_verbatim_and_idempotent(store_url, task, truth, tmp_path):
    csv_store = old_csv_store(tmp_path / "store.csv", truth, tmp_path)
    csv_bytes = csv_store.path.read_bytes()
    store = SqlLabelStore(store_url, task)
    counts = migrate_csv_store(csv_store.path, store)
    assert counts["rows_imported"] == 141 and counts["files_imported"] == 3
    pd.testing.assert_frame_equal(store.history(), csv_store.history())
    assert migrate_csv_store(csv_store.path, store)["rows_imported"] == 0 and len(store.history()) == 141
    assert csv_store.path.read_bytes() == csv_bytes
    # After the move, a retried ingest of round 1's file still adds nothing.
    round_one_sha = csv_store.history()["source_sha256"].iloc[100]
    assert store.append(truth.iloc[100:140], round_number=1, source="again", source_sha256=round_one_sha) == 0


def test_an_existing_workspace_keeps_working(store_url, task, truth, tmp_path, caplog):
    """A task folder with the old CSV store: imported on first open, the CSV kept as a backup."""
    config = LoopConfig(workspace=str(tmp_path / "ws"), task=task, label_store_url=store_url)
    workspace = TaskWorkspace(config)
    csv_store = old_csv_store(workspace.legacy_store_path, truth, tmp_path)
    csv_bytes = csv_store.path.read_bytes()
    with caplog.at_level(logging.INFO, logger="al_tasks"):
        assert len(workspace.store) == 140
    assert any("importing the CSV store" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="al_tasks"):
        assert len(workspace.store.history()) == 141
    assert not any("importing" in r.getMessage() for r in caplog.records)
    assert csv_store.path.read_bytes() == csv_bytes


def test_export_is_spreadsheet_safe(store_url, task, truth, tmp_path):
    store = SqlLabelStore(store_url, task)
    store.append(truth.head(20), round_number=0, source='=HYPERLINK("http://evil.example")', source_sha256="0" * 64)
    store.append(truth.head(1).assign(label="other"), round_number=1, source="-fix", source_sha256="1" * 64)
    assert store.export_csv(tmp_path / "current.csv") == 20
    assert store.export_csv(tmp_path / "history.csv", history=True) == 21
    raw = (tmp_path / "current.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    current = pd.read_csv(tmp_path / "current.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(current.columns) == list(STORE_COLUMNS) and current["id"].tolist()[-1] == truth["id"].iloc[0]
    assert current.set_index("id").loc[truth["id"].iloc[0], "label"] == "other"
    history = pd.read_csv(tmp_path / "history.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    cells = history.to_numpy().ravel().tolist()
    assert not [c for c in cells if c.startswith(FORMULA_TRIGGERS)]
    assert (history["source"] == "'-fix").sum() == 1


def test_the_sqlite_file_and_the_export_have_the_workspace_file_mode(tmp_path, truth):
    """One mode for workspace files: 0o666 minus the umask (0644 with umask 022), never 0600,
    also after a rewrite (issue 11, defect 12)."""
    previous = os.umask(0o022)
    try:
        workspace = TaskWorkspace(LoopConfig(workspace=str(tmp_path / "ws"), task="modes"))
        workspace.store.append(truth.head(5), round_number=0, source="seed", source_sha256="0" * 64)
        workspace.store.append(truth.head(5).assign(label="other"), round_number=1, source="r1", source_sha256="1" * 64)
        workspace.store.export_csv(workspace.labels_dir / "export.csv")
        rejected = pd.DataFrame({"line": [2, 3], "id": ["1", "2"], "label": ["x", "y"], "reason": ["no id", "no id"]})
        write_rejects(rejected.head(1), workspace.rejects_path, source="round-1.csv")
        write_rejects(rejected, workspace.rejects_path, source="round-1.csv")  # the rewrite kept 0600 once
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in workspace.labels_dir.iterdir()}
    finally:
        os.umask(previous)
    assert modes == {"store.db": 0o644, "export.csv": 0o644, "rejects.csv": 0o644, "rejects.csv.lock": 0o644}


# --- the CLI ------------------------------------------------------------------------------------
def test_al_labels_migrate_and_export(store_url, task, truth, tmp_path, capsys):
    workspace = TaskWorkspace(LoopConfig(workspace=str(tmp_path / "ws"), task=task))
    old_csv_store(workspace.legacy_store_path, truth, tmp_path)
    flags = ["--workspace", str(tmp_path / "ws"), "--task", task, "--label-store-url", store_url, "--json"]
    assert main(["labels", "migrate", *flags]) == 0
    assert '"rows_imported": 141' in capsys.readouterr().out
    assert main(["labels", "migrate", *flags]) == 0
    assert '"rows_imported": 0' in capsys.readouterr().out
    out = tmp_path / "labels.csv"
    assert main(["labels", "export", "--out", str(out), *flags]) == 0
    assert len(pd.read_csv(out, dtype=str, encoding="utf-8-sig")) == 140
    assert main(["labels", "export", "--history", "--out", str(out), *flags]) == 0
    assert len(pd.read_csv(out, dtype=str, encoding="utf-8-sig")) == 141


def test_a_missing_postgresql_database_is_created(postgres_label_store_url, truth):
    import sqlalchemy as sa

    url = postgres_label_store_url + "_auto"
    try:
        store = SqlLabelStore(url, "t")
        assert store.append(truth.head(3), round_number=0, source="seed", source_sha256="0" * 64) == 3
        assert len(SqlLabelStore(url, "t")) == 3
    finally:
        from al_tasks.labelling import store_sql

        store_sql.dispose_engines()
        admin = sa.create_engine(sa.make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
        admin.dispose()
