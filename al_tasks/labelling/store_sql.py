"""The label store in a database, through SQLAlchemy: SQLite (embedded) or PostgreSQL.

Two tables, keyed by task, so one database serves many tasks:

* ``al_label_rows`` -- the history: one row per appended label (``seq`` orders them; the
  latest row of an id wins);
* ``al_label_sources`` -- one row per appended file and round (primary key
  ``task, round, source_sha256``): the record that makes an append idempotent, also
  for a file whose every row repeated a current label and so added none.

An append is one transaction, serialised per task (PostgreSQL: a transaction-level
advisory lock on the task; SQLite: ``BEGIN IMMEDIATE``, one writer at a time, waiting up
to :data:`SQLITE_BUSY_SECONDS`), so concurrent ingests of different files lose nothing
and "latest wins" follows the commit order. Connections are not pooled (``NullPool``):
a worker process that forks never shares a connection with its parent.

The SQLite file is created with the workspace's file mode
(:data:`al_tasks.io.atomic.FILE_MODE` minus the umask: 0644 with the usual umask).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from al_tasks.config import masked_url
from al_tasks.errors import LabelStoreError
from al_tasks.io.atomic import FILE_MODE
from al_tasks.labelling.store import (
    STORE_COLUMNS,
    CsvLabelStore,
    LabelStore,
    empty_history,
    new_rows,
    rows_to_append,
    utc_now,
    validated_labels,
)

log = logging.getLogger(__name__)

#: How long a SQLite writer waits for another one to commit.
SQLITE_BUSY_SECONDS = 60
#: Execution option marking a writing transaction (``BEGIN IMMEDIATE`` on SQLite).
WRITE_OPTION = "al_label_store_write"

METADATA = sa.MetaData()
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

ROWS = sa.Table(
    "al_label_rows",
    METADATA,
    sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(64), nullable=False),
    sa.Column("id", sa.Text, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("source_sha256", sa.String(64), nullable=False),
    sa.Column("labelled_at", sa.String(32), nullable=False),
    sa.Index("ix_al_label_rows_task_id", "task", "id"),
)

SOURCES = sa.Table(
    "al_label_sources",
    METADATA,
    sa.Column("task", sa.String(64), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("source_sha256", sa.String(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("rows_added", sa.Integer, nullable=False),
    sa.Column("appended_at", sa.String(32), nullable=False),
)

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def _lock_key(name: str) -> int:
    """A signed 64-bit PostgreSQL advisory lock key for ``name``."""
    return int.from_bytes(hashlib.sha256(f"al-label-store:{name}".encode()).digest()[:8], "big", signed=True)


def _sqlite_engine(url: sa.URL) -> Engine:
    path = Path(url.database or "")
    if not url.database or url.database == ":memory:":
        raise LabelStoreError("a SQLite label store needs a file, not an in-memory database")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created here with the workspace's mode; SQLite takes an empty file as a new database.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    @sa.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):  # pragma: no cover - driver hook
        # The driver's own BEGIN would be DEFERRED; BEGIN IMMEDIATE below takes the write
        # lock at the start, so two appends never both read the history before writing.
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(connection):  # pragma: no cover - driver hook
        # Writers (see _writer) take the write lock at once; readers never wait for it.
        writes = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")

    return engine


def _create_postgres_database_if_missing(url: sa.URL) -> None:
    """Create ``url``'s database when it does not exist (through the ``postgres`` database)."""
    probe = sa.create_engine(url, poolclass=NullPool)
    try:
        with probe.connect():
            return
    except sa.exc.OperationalError as exc:
        if "does not exist" not in str(exc.orig):
            raise
    finally:
        probe.dispose()
    admin = sa.create_engine(url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            log.info("label store: creating database %s", url.render_as_string(hide_password=True))
            try:
                conn.exec_driver_sql(f'CREATE DATABASE "{url.database}"')
            except (sa.exc.ProgrammingError, sa.exc.IntegrityError):  # another process created it meanwhile
                query = sa.text("SELECT 1 FROM pg_database WHERE datname = :name")
                if conn.execute(query, {"name": url.database}).first() is None:
                    raise
    finally:
        admin.dispose()


def engine_for(url: str) -> Engine:
    """The (cached, per process) engine of ``url``, its tables created if missing.

    A PostgreSQL database that does not exist yet is created (through the ``postgres``
    maintenance database). Raises :class:`LabelStoreError` naming the URL (password
    masked) when the database cannot be reached.
    """
    with _engines_lock:
        parsed = sa.make_url(url)
        cached = _engines.get(url)
        if cached is not None and (parsed.get_backend_name() != "sqlite" or Path(parsed.database or "").exists()):
            return cached
        # (A SQLite file removed since, e.g. with its task folder, is created again.)
        try:
            if parsed.get_backend_name() == "sqlite":
                engine = _sqlite_engine(parsed)
            else:
                if parsed.get_backend_name() == "postgresql":
                    _create_postgres_database_if_missing(parsed)
                engine = sa.create_engine(parsed, poolclass=NullPool)
            with _writer(engine).begin() as conn:
                _lock(conn, "schema")
                METADATA.create_all(conn)
        except sa.exc.SQLAlchemyError as exc:
            detail = str(getattr(exc, "orig", None) or exc).strip()
            if parsed.password:
                detail = detail.replace(str(parsed.password), "***")
            raise LabelStoreError(f"label store {masked_url(url)}: {type(exc).__name__}: {detail}") from exc
        _engines[url] = engine
        return engine


def _writer(engine: Engine) -> Engine:
    """``engine`` for a writing transaction (the same connections, marked :data:`WRITE_OPTION`)."""
    return engine.execution_options(**{WRITE_OPTION: True})


def dispose_engines() -> None:
    """Forget the cached engines (e.g. before a test drops its database)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def _lock(conn: Connection, name: str) -> None:
    """Serialise writers of ``name`` until the transaction ends.

    PostgreSQL: an advisory lock; SQLite's ``BEGIN IMMEDIATE`` already holds the write lock.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})


class SqlLabelStore(LabelStore):
    """A task's labels in a SQL database (see the module docstring).

    Parameters
    ----------
    url : SQLAlchemy URL, e.g. ``sqlite:////work/ws/task/labels/store.db`` or
        ``postgresql+psycopg2://postgres@127.0.0.1:5432/al_labels``
    task : the task whose labels these are
    """

    def __init__(self, url: str, task: str):
        self.url, self.task = url, task
        self.location = f"{masked_url(url)} (task {task})"
        self.engine = engine_for(url)

    # --- writes ------------------------------------------------------------------------
    def append(self, accepted_df: pd.DataFrame, *, round_number: int, source: str, source_sha256: str) -> int:
        ids, labels = validated_labels(accepted_df, source)
        round_number = int(round_number)
        with _writer(self.engine).begin() as conn:
            _lock(conn, f"task:{self.task}")
            if self._already_appended(conn, round_number, source_sha256):
                return 0
            ids, labels = rows_to_append(self._latest(conn, ids), ids, labels, round_number)
            rows = new_rows(ids, labels, round_number, source, source_sha256)
            self._insert(conn, rows, round_number=round_number, source=source, source_sha256=source_sha256)
        return len(rows)

    def _already_appended(self, conn: Connection, round_number: int, source_sha256: str) -> bool:
        query = sa.select(SOURCES.c.rows_added).where(
            SOURCES.c.task == self.task, SOURCES.c.round == round_number, SOURCES.c.source_sha256 == source_sha256
        )
        return conn.execute(query).first() is not None

    def _latest(self, conn: Connection, ids: list[str]) -> dict[str, tuple[str, int]]:
        """Map each of ``ids`` that has a row to (label, round) of its latest row."""
        latest: dict[str, tuple[str, int]] = {}
        for start in range(0, len(ids), 500):
            query = (
                sa.select(ROWS.c.id, ROWS.c.label, ROWS.c.round)
                .where(ROWS.c.task == self.task, ROWS.c.id.in_(ids[start : start + 500]))
                .order_by(ROWS.c.seq)
            )
            latest.update({row.id: (row.label, int(row.round)) for row in conn.execute(query)})
        return latest

    def _insert(self, conn: Connection, rows: pd.DataFrame, *, round_number: int, source: str, source_sha256: str):
        """Rows (store columns, as :func:`new_rows` gives them) and their file's record."""
        conn.execute(
            SOURCES.insert().values(
                task=self.task,
                round=round_number,
                source_sha256=source_sha256,
                source=source,
                rows_added=len(rows),
                appended_at=utc_now(),
            )
        )
        if len(rows):
            records = [
                {**dict(zip(STORE_COLUMNS, values, strict=True)), "task": self.task, "round": int(values[2])}
                for values in rows[list(STORE_COLUMNS)].itertuples(index=False, name=None)
            ]
            conn.execute(ROWS.insert(), records)

    # --- reads -------------------------------------------------------------------------
    def history(self) -> pd.DataFrame:
        query = sa.select(*(ROWS.c[c] for c in STORE_COLUMNS)).where(ROWS.c.task == self.task).order_by(ROWS.c.seq)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            frame = empty_history()
        else:
            frame = pd.DataFrame([tuple(r) for r in rows], columns=list(STORE_COLUMNS)).astype(str)
        frame["round"] = frame["round"].astype("int64")
        return frame

    def row_count(self) -> int:
        """Number of history rows of the task."""
        query = sa.select(sa.func.count()).select_from(ROWS).where(ROWS.c.task == self.task)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def has_any_record(self) -> bool:
        """Whether anything (a row or a file record) was ever appended for the task."""
        query = sa.select(SOURCES.c.round).where(SOURCES.c.task == self.task).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def ids(self) -> set[str]:
        query = sa.select(ROWS.c.id).where(ROWS.c.task == self.task).distinct()
        with self.engine.connect() as conn:
            return {row.id for row in conn.execute(query)}

    # --- migration ---------------------------------------------------------------------
    def import_history(self, history: pd.DataFrame) -> dict:
        """Copy a CSV store's ``history`` in, verbatim, file by file; idempotent.

        Each (round, source_sha256) group not already recorded for the task is added with
        its rows as they were (sources and times kept); groups already there are skipped.
        Returns ``{"files_imported", "rows_imported", "files_already_there"}``.
        """
        history = history.astype({c: str for c in STORE_COLUMNS if c != "round"})
        groups = history.groupby(["round", "source_sha256"], sort=False)
        imported = rows_imported = already = 0
        with _writer(self.engine).begin() as conn:
            _lock(conn, f"task:{self.task}")
            for (round_number, source_sha256), rows in groups:
                if self._already_appended(conn, int(round_number), source_sha256):
                    already += 1
                    continue
                source = rows["source"].iloc[0]
                self._insert(conn, rows, round_number=int(round_number), source=source, source_sha256=source_sha256)
                imported, rows_imported = imported + 1, rows_imported + len(rows)
        return {"files_imported": imported, "rows_imported": rows_imported, "files_already_there": already}


def migrate_csv_store(csv_path: str | os.PathLike, store: SqlLabelStore) -> dict:
    """Move the CSV store at ``csv_path`` into ``store`` (idempotent; the CSV is left as is).

    Returns :meth:`SqlLabelStore.import_history`'s counts plus ``csv`` and ``store``.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise LabelStoreError(f"{csv_path}: no CSV label store there")
    history = CsvLabelStore(csv_path).history()
    counts = store.import_history(history)
    log.info(
        "label store: %s rows of %s file(s) imported from %s into %s (%s file(s) were already there)",
        counts["rows_imported"],
        counts["files_imported"],
        csv_path,
        store.location,
        counts["files_already_there"],
    )
    return {**counts, "csv": str(csv_path), "store": store.location}


def open_label_store(url: str, task: str, legacy_csv: Path | None = None) -> SqlLabelStore:
    """The task's store at ``url``; an old CSV store is imported on first open.

    When ``legacy_csv`` exists and the database has nothing for the task yet, its rows
    are imported (logged; the CSV file is kept untouched as a backup).
    """
    store = SqlLabelStore(url, task)
    if legacy_csv is not None and legacy_csv.exists() and not store.has_any_record():
        log.info("label store: first open of %s; importing the CSV store %s", store.location, legacy_csv)
        migrate_csv_store(legacy_csv, store)
    return store
