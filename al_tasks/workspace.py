"""The on-disk layout of a task: the only module that builds workspace paths.

::

    <workspace>/
        mlflow.db, mlartifacts/               MLflow's default store (when no server is configured)
        landing/                              where new complaint files arrive (daily ingest default)
        <task>/
            features/<fingerprint>/           featurize output (al_tasks.ml.features.FeatureSet)
            labels/store.db                   the label store, a SQLite file (when label_store_url is
                                              empty; al_tasks.labelling.store_sql)
            labels/store.csv                  the label store of earlier versions (imported into the
                                              database on first open, then kept as a backup)
            labels/evaluation.csv             the fixed evaluation set (id,label), written once
            labels/rejects.csv                every rejected label row, with its reason
            rounds/round-<n>/                 query.csv, query.xlsx, query.parquet, manifest.json,
                                              pool.png, summary.json, labelled/<file as dropped>
            seed/                             seed files as downloaded from the bucket
            staged/date=<D>/                  daily ingest: a day's checked complaints
            scored/date=<D>/                  daily ingest: a day's lists and scores
            landing_cache/date=<D>/           daily ingest: files downloaded from an S3 landing

In a multi-machine deployment the workspace is a shared volume (or network mount) that
every worker and Spark executor sees at the same path. Every path built here is checked
to stay inside the workspace, whatever the task name or round.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

from al_tasks.config import LoopConfig
from al_tasks.errors import ConfigError
from al_tasks.io.atomic import atomic_write_text
from al_tasks.labelling.store import EvaluationSet, LabelStore
from al_tasks.labelling.store_sql import open_label_store


@dataclasses.dataclass(frozen=True)
class TaskWorkspace:
    """Paths of one task's files (nothing is created until a writer asks for a folder).

    Parameters
    ----------
    config : LoopConfig (``workspace`` and ``task`` are used)
    """

    config: LoopConfig

    # --- roots -------------------------------------------------------------------------
    @property
    def base(self) -> Path:
        """The workspace folder itself, absolute."""
        return Path(self.config.workspace).resolve()

    def inside(self, path: Path) -> Path:
        """``path`` resolved, after checking it stays inside the workspace."""
        resolved = path.resolve()
        if resolved != self.base and self.base not in resolved.parents:
            raise ConfigError(f"{path} resolves to {resolved}, outside the workspace {self.base}")
        return resolved

    @property
    def root(self) -> Path:
        """``<workspace>/<task>``."""
        return self.inside(self.base / self.config.task)

    # --- shared by the tasks of a workspace ---------------------------------------------
    @property
    def mlflow_db(self) -> Path:
        return self.base / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.base / "mlartifacts"

    @property
    def default_landing(self) -> Path:
        return self.base / "landing"

    # --- features ----------------------------------------------------------------------
    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def feature_dir(self, fingerprint: str) -> Path:
        return self.inside(self.features_dir / fingerprint)

    @property
    def corpus_root(self) -> Path:
        """``<workspace>/<task>/corpus``: ingested corpora, one folder per corpus fingerprint."""
        return self.root / "corpus"

    def corpus_dir(self, fingerprint: str) -> Path:
        return self.inside(self.corpus_root / fingerprint)

    # --- labels ------------------------------------------------------------------------
    @property
    def labels_dir(self) -> Path:
        return self.root / "labels"

    @property
    def legacy_store_path(self) -> Path:
        """The CSV label store of earlier versions (read once, to migrate it)."""
        return self.labels_dir / "store.csv"

    @property
    def sqlite_store_path(self) -> Path:
        """The embedded label store's SQLite file (used when ``label_store_url`` is empty)."""
        return self.labels_dir / "store.db"

    @property
    def label_store_url(self) -> str:
        """``label_store_url``, or the embedded SQLite file's URL when it is empty."""
        return self.config.label_store_url or f"sqlite:///{self.inside(self.sqlite_store_path)}"

    @property
    def store(self) -> LabelStore:
        """The task's label store (an old CSV store there is imported on first open)."""
        return open_label_store(self.label_store_url, self.config.task, legacy_csv=self.legacy_store_path)

    @property
    def evaluation_set(self) -> EvaluationSet:
        """The task's fixed evaluation set."""
        return EvaluationSet(self.evaluation_path)

    def is_seeded(self) -> bool:
        return self.evaluation_set.exists() and len(self.store) > 0

    @property
    def evaluation_path(self) -> Path:
        return self.labels_dir / "evaluation.csv"

    @property
    def rejects_path(self) -> Path:
        return self.labels_dir / "rejects.csv"

    @property
    def seed_dir(self) -> Path:
        return self.root / "seed"

    # --- rounds ------------------------------------------------------------------------
    def round_dir(self, round_number: int, *, create: bool = True) -> Path:
        path = self.inside(self.root / "rounds" / f"round-{int(round_number)}")
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def labelled_file_path(self, round_number: int, file_name: str) -> Path:
        """Where a round's labelled file is kept as dropped (``file_name`` without folders)."""
        return self.inside(self.round_dir(round_number) / "labelled" / Path(file_name).name)

    def summary_path(self, round_number: int) -> Path:
        return self.round_dir(round_number, create=False) / "summary.json"

    def write_summary(self, round_number: int, summary: dict) -> Path:
        self.round_dir(round_number)
        return atomic_write_text(self.summary_path(round_number), json.dumps(summary, indent=2, default=str))

    def read_summary(self, round_number: int) -> dict | None:
        path = self.summary_path(round_number)
        return json.loads(path.read_text()) if path.exists() else None

    # --- daily ingest ------------------------------------------------------------------
    def staged_dir(self, day: dt.date) -> Path:
        return self.root / "staged" / f"date={day.isoformat()}"

    def scored_dir(self, day: dt.date) -> Path:
        return self.root / "scored" / f"date={day.isoformat()}"

    def landing_cache(self, day: dt.date) -> Path:
        return self.root / "landing_cache" / f"date={day.isoformat()}"
