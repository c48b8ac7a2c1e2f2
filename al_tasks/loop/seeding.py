"""Start a task: seed labels in the store, the fixed evaluation set held out once."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.errors import ConfigError, InputFileNotFoundError
from al_tasks.io import s3
from al_tasks.labelling.ingest import read_labelled_file
from al_tasks.labelling.rejects import write_rejects
from al_tasks.ml.splits import stratified_split
from al_tasks.workspace import TaskWorkspace

log = logging.getLogger(__name__)


def seed_task(config: LoopConfig, seed_labels_path: str | Path, corpus_ids: np.ndarray) -> dict:
    """Start a task from a labelled CSV (id,label) of random corpus items.

    The evaluation set is ``config.eval_labels_path`` when given, else a stratified
    ``eval_fraction`` of the seed labels, held out once. Idempotent: a seeded task is
    left as it is.

    Returns ``{"seeded" (False when it already was), "n_train", "n_eval"[, "n_rejected"]}``.
    """
    workspace = TaskWorkspace(config)
    if workspace.is_seeded():
        return {"seeded": False, "n_train": len(workspace.store), "n_eval": len(workspace.evaluation_set.read())}
    parsed = read_labelled_file(seed_labels_path, query_ids=corpus_ids, classes=config.classes)
    if len(parsed.rejects):
        write_rejects(parsed.rejects, workspace.rejects_path, source=str(seed_labels_path))
    accepted = parsed.accepted.assign(id=lambda f: f["id"].astype("int64"))
    if config.eval_labels_path:
        held_out = read_labelled_file(config.eval_labels_path, query_ids=corpus_ids, classes=config.classes)
        if len(held_out.rejects):
            write_rejects(held_out.rejects, workspace.rejects_path, source=str(config.eval_labels_path))
        evaluation = held_out.accepted.assign(id=lambda f: f["id"].astype("int64"))
        train = accepted[~accepted["id"].isin(evaluation["id"])]
    else:
        train_pos, eval_pos = stratified_split(
            accepted["label"].to_numpy(dtype=object), config.eval_fraction, config.seed
        )
        train, evaluation = accepted.iloc[train_pos], accepted.iloc[eval_pos]
    workspace.evaluation_set.write(evaluation)
    workspace.store.append(
        train[["id", "label"]].astype({"id": str}),
        round_number=0,
        source=str(seed_labels_path),
        source_sha256=parsed.source_sha256,
    )
    log.info(
        "seed: %s training labels, %s evaluation labels, %s rejected rows",
        len(train),
        len(evaluation),
        len(parsed.rejects),
    )
    return {"seeded": True, "n_train": len(train), "n_eval": len(evaluation), "n_rejected": len(parsed.rejects)}


def seed_from_bucket(client: Any, config: LoopConfig, corpus_ids: np.ndarray) -> dict:
    """Seed from ``s3://<bucket>/<seed_prefix>/<task>/labels.csv`` unless already seeded.

    An optional ``evaluation.csv`` beside it becomes the fixed evaluation set. Returns
    :func:`seed_task`'s result plus ``seed_labels`` and ``evaluation_labels`` (URIs).
    """
    workspace = TaskWorkspace(config)
    if workspace.is_seeded():
        log.info("task %r is already seeded: nothing to do", config.task)
        return seed_task(config, "", corpus_ids)
    prefix, bucket = config.task_prefix("seed_prefix"), config.bucket
    labels_key, evaluation_key = prefix + "labels.csv", prefix + "evaluation.csv"
    if not s3.object_exists(client, bucket, labels_key):
        raise InputFileNotFoundError(
            f"task {config.task!r} is not seeded and s3://{bucket}/{labels_key} does not exist: upload a CSV with "
            "columns id,label of randomly chosen corpus items there (optionally evaluation.csv beside it as the "
            "fixed evaluation set)"
        )
    labels_path = workspace.seed_dir / "labels.csv"
    labels_path.parent.mkdir(parents=True, exist_ok=True)
    labels_path.write_bytes(s3.read_bytes(client, bucket, labels_key))
    overrides, evaluation_uri = {}, None
    if s3.object_exists(client, bucket, evaluation_key):
        evaluation_path = workspace.seed_dir / "evaluation.csv"
        evaluation_path.write_bytes(s3.read_bytes(client, bucket, evaluation_key))
        overrides["eval_labels_path"] = str(evaluation_path)
        evaluation_uri = f"s3://{bucket}/{evaluation_key}"
    result = seed_task(config.with_overrides(overrides), labels_path, corpus_ids)
    return {**result, "seed_labels": f"s3://{bucket}/{labels_key}", "evaluation_labels": evaluation_uri}


def sample_seed_files(
    config: LoopConfig, *, size: int, out: Path, eval_size: int = 0, eval_out: Path | None = None
) -> dict:
    """Write a random labelled seed (``id,label``) from the corpus's ground-truth column.

    With ``eval_size``, a second, disjoint random sample is written as the evaluation
    file (default ``evaluation.csv`` beside ``out``). Binary tasks get ``positive_class``
    / ``rest`` labels. Returns ``{"seed_labels", "n_seed"[, "eval_labels", "n_eval"]}``.
    """
    import pyarrow.dataset as ds

    from al_tasks.io.corpus import binary_labels, ingest_corpus

    # Ids and labels of the ingested corpus (streamed once, reused by featurize): no texts.
    dataset = ds.dataset(str(ingest_corpus(config).docs_path), format="parquet")
    docs = dataset.to_table(columns=[c for c in ("id", "label") if c in dataset.schema.names]).to_pandas()
    if "label" not in docs:
        raise ConfigError(f"{config.corpus_path}: no ground-truth column {config.label_column!r} to sample a seed from")
    labels = binary_labels(docs["label"], config.positive_class) if config.positive_class else docs["label"].to_numpy()
    order = np.random.default_rng(config.seed).permutation(len(docs))
    seed_rows, eval_rows = order[:size], order[size : size + eval_size]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"id": docs["id"].to_numpy()[seed_rows], "label": labels[seed_rows]}).to_csv(out, index=False)
    result: dict = {"seed_labels": str(out), "n_seed": len(seed_rows)}
    if eval_size:
        eval_out = Path(eval_out or Path(out).with_name("evaluation.csv"))
        pd.DataFrame({"id": docs["id"].to_numpy()[eval_rows], "label": labels[eval_rows]}).to_csv(eval_out, index=False)
        result.update(eval_labels=str(eval_out), n_eval=len(eval_rows))
    return result
