"""A task's files on disk: label store, evaluation set, rounds.

::

    <workspace>/<task>/
        features/<fingerprint>/        featurize output (see featurize.py)
        labels/store.csv               append-only label store (labelling.LabelStore)
        labels/evaluation.csv          the fixed evaluation set (id,label), written once
        labels/rejects.csv             every rejected label row, with its reason
        rounds/round-<n>/              query.csv, manifest.json, pool.png, summary.json
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.labelling import LabelStore, read_labelled_file, write_rejects


@dataclasses.dataclass(frozen=True)
class TaskWorkspace:
    config: LoopConfig

    @property
    def root(self) -> Path:
        return self.config.task_dir

    @property
    def store(self) -> LabelStore:
        path = self.root / "labels" / "store.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        return LabelStore(path)

    @property
    def evaluation_path(self) -> Path:
        return self.root / "labels" / "evaluation.csv"

    @property
    def rejects_path(self) -> Path:
        return self.root / "labels" / "rejects.csv"

    def round_dir(self, round_number: int) -> Path:
        path = self.root / "rounds" / f"round-{round_number}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ------------------------------------------------------------------ label state
    def labelled(self, before_round: int | None = None) -> pd.DataFrame:
        """Training labels: DataFrame (id int64, label str), latest label per id.

        ``before_round=n`` keeps labels ingested before round n (the seed is round 0,
        the answers to round n's query set are round n), so re-running an old round
        sees exactly the labels it saw the first time.
        """
        history = self.store.history()
        if before_round is not None and len(history):
            history = history[history["round"].astype("int64") < before_round]
        latest = history.drop_duplicates("id", keep="last") if len(history) else history
        return pd.DataFrame({"id": latest["id"].astype("int64").to_numpy() if len(latest) else np.zeros(0, np.int64),
                             "label": latest["label"].astype(str).to_numpy() if len(latest) else np.zeros(0, object)})

    def evaluation(self) -> pd.DataFrame:
        """The fixed evaluation set: DataFrame (id int64, label str); empty if none yet."""
        if not self.evaluation_path.exists():
            return pd.DataFrame({"id": np.zeros(0, np.int64), "label": np.zeros(0, object)})
        frame = pd.read_csv(self.evaluation_path, dtype={"label": str})
        return pd.DataFrame({"id": frame["id"].astype("int64").to_numpy(), "label": frame["label"].to_numpy(dtype=object)})

    def is_seeded(self) -> bool:
        return self.evaluation_path.exists() and len(self.store) > 0

    def seed(self, seed_labels_path: str | Path, corpus_ids: np.ndarray, *, log=print) -> dict:
        """Start a task from a labelled CSV (id,label) of random corpus items.

        The evaluation set is ``config.eval_labels_path`` when given, else a stratified
        ``eval_fraction`` of the seed labels, held out once. Idempotent: a seeded task
        is left as it is.
        """
        from al_tasks.tune import stratified_split

        if self.is_seeded():
            return {"seeded": False, "n_train": len(self.store), "n_eval": len(self.evaluation())}
        cfg = self.config
        parsed = read_labelled_file(seed_labels_path, query_ids=corpus_ids, classes=cfg.classes)
        if len(parsed.rejects):
            write_rejects(parsed.rejects, self.rejects_path, source=str(seed_labels_path))
        accepted = parsed.accepted.assign(id=lambda f: f["id"].astype("int64"))
        if cfg.eval_labels_path:
            ev = read_labelled_file(cfg.eval_labels_path, query_ids=corpus_ids, classes=cfg.classes)
            if len(ev.rejects):
                write_rejects(ev.rejects, self.rejects_path, source=str(cfg.eval_labels_path))
            evaluation = ev.accepted.assign(id=lambda f: f["id"].astype("int64"))
            train = accepted[~accepted["id"].isin(evaluation["id"])]
        else:
            train_pos, eval_pos = stratified_split(accepted["label"].to_numpy(dtype=object), cfg.eval_fraction, cfg.seed)
            train, evaluation = accepted.iloc[train_pos], accepted.iloc[eval_pos]
        self.evaluation_path.parent.mkdir(parents=True, exist_ok=True)
        evaluation[["id", "label"]].to_csv(self.evaluation_path, index=False)
        self.store.append(train[["id", "label"]].astype({"id": str}), round_number=0, source=str(seed_labels_path),
                          source_sha256=parsed.source_sha256)
        log(f"seed: {len(train)} training labels, {len(evaluation)} evaluation labels, {len(parsed.rejects)} rejected rows")
        return {"seeded": True, "n_train": len(train), "n_eval": len(evaluation), "n_rejected": len(parsed.rejects)}

    def write_summary(self, round_number: int, summary: dict) -> Path:
        path = self.round_dir(round_number) / "summary.json"
        path.write_text(json.dumps(summary, indent=2, default=str))
        return path

    def read_summary(self, round_number: int) -> dict | None:
        path = self.root / "rounds" / f"round-{round_number}" / "summary.json"
        return json.loads(path.read_text()) if path.exists() else None
