"""The simulated labeller: answers query sets from the corpus's ground-truth column.

It stands in for the human in the demo and the benchmarks. It watches
``s3://<bucket>/<outbox_prefix>/<task>/round-<n>.csv`` and, for every query set with no
answer yet in ``<inbox_prefix>/<task>/`` or ``<processed_prefix>/<task>/`` (any name
:func:`al_tasks.labelling.inbox.match_inbox_key` accepts), writes
``<inbox_prefix>/<task>/round-<n>.csv`` with the ``label`` column filled in.

    python -m devstack.labeller --once                      # answer what is there, exit
    python -m devstack.labeller --poll-seconds 5 --noise 0.05 --partial 0.1 --delay-seconds 30

Settings: the LoopConfig flags of ``al`` (``--bucket``, ``--task``, ``--s3-endpoint-url``,
...) over ``AL_*`` variables. S3 credentials: ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from al_tasks.config import LoopConfig
from al_tasks.io import s3
from al_tasks.labelling.ids import normalise_id
from al_tasks.labelling.inbox import match_inbox_key
from devstack.processes import say

__all__ = [
    "AnswerStats",
    "answer_query_set",
    "answer_query_set_with_stats",
    "load_truth",
    "main",
    "pending_query_sets",
    "run_once",
]

#: The label a binary task gives every class other than ``positive_class``.
REST_LABEL = "rest"
_QUERY_KEY = re.compile(r"round-(\d+)\.csv")


@dataclass(frozen=True)
class AnswerStats:
    """What :func:`answer_query_set` did: rows answered, left blank, and given a wrong label."""

    rows: int
    labelled: int
    blank: int
    noisy: int


def load_truth(
    corpus_path: str,
    *,
    id_column: str = "Complaint ID",
    label_column: str = "Product group",
    positive_class: str = "",
) -> dict[str, str]:
    """Ground truth ``{normalised id: label}`` from a corpus in CFPB export format.

    Reads only the two columns (CSV, optionally gzipped, or Parquet). With
    ``positive_class`` set (a binary task), labels become ``positive_class`` or ``"rest"``.
    Rows with a blank id or label are left out. Raises ValueError naming the file if a
    column is missing.
    """
    columns = [id_column, label_column]
    try:
        if str(corpus_path).endswith(".parquet"):
            frame = pd.read_parquet(corpus_path, columns=columns).astype(str)
        else:
            frame = pd.read_csv(corpus_path, usecols=columns, dtype=str, keep_default_na=False)
    except ValueError as exc:
        raise ValueError(f"{corpus_path}: cannot read columns {columns}: {exc}") from exc
    ids = [normalise_id(v) for v in frame[id_column].to_numpy()]
    labels = [str(v).strip() for v in frame[label_column].to_numpy()]
    truth = {i: label for i, label in zip(ids, labels) if i and label}
    if positive_class:
        truth = {i: (positive_class if label == positive_class else REST_LABEL) for i, label in truth.items()}
    return truth


def answer_query_set(
    query_csv_bytes: bytes,
    truth: Mapping[str, str],
    *,
    noise: float,
    partial: float,
    classes: Sequence[str],
    rng: np.random.Generator,
) -> bytes:
    """The labelled file for a query set, as a labeller would return it.

    Parameters
    ----------
    query_csv_bytes : the query-set CSV (``rank,id,text,model_guess,confidence,label``,
        UTF-8 with or without BOM)
    truth : ``{id: true label}``; ids as :func:`al_tasks.labelling.ids.normalise_id` makes them
    noise : fraction of the answered rows given a wrong label, drawn uniformly from
        the other ``classes`` (exactly ``round(noise * answered)`` rows)
    partial : fraction of rows left blank (exactly ``round(partial * rows)``)
    classes : label values; empty: the distinct values of ``truth``
    rng : source of randomness (seed it for a reproducible answer)

    Returns
    -------
    bytes, the same CSV (UTF-8 with BOM, every other cell unchanged) with ``label``
    filled. Use :func:`answer_query_set_with_stats` to also get the counts.

    Raises
    ------
    ValueError
        the CSV has no ``id`` column, or lists ids missing from ``truth``
    """
    return answer_query_set_with_stats(query_csv_bytes, truth, noise=noise, partial=partial, classes=classes, rng=rng)[
        0
    ]


def answer_query_set_with_stats(
    query_csv_bytes: bytes,
    truth: Mapping[str, str],
    *,
    noise: float,
    partial: float,
    classes: Sequence[str],
    rng: np.random.Generator,
) -> tuple[bytes, AnswerStats]:
    """:func:`answer_query_set` plus an :class:`AnswerStats`."""
    for name, fraction in (("noise", noise), ("partial", partial)):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{name}={fraction}: must be between 0 and 1")
    text = query_csv_bytes.decode("utf-8-sig")
    records = list(csv.reader(io.StringIO(text, newline="")))
    if not records:
        raise ValueError("query set is empty")
    header = [cell.strip().lower() for cell in records[0]]
    if "id" not in header:
        raise ValueError(f"query set has no 'id' column (header: {records[0]})")
    if "label" not in header:
        header.append("label")
        records[0] = [*records[0], "label"]
    id_at, label_at = header.index("id"), header.index("label")
    rows = [r + [""] * (len(header) - len(r)) for r in records[1:] if any(c.strip() for c in r)]

    ids = [normalise_id(r[id_at]) for r in rows]
    unknown = [i for i in ids if i not in truth]
    if unknown:
        raise ValueError(f"{len(unknown)} query id(s) have no ground truth, e.g. {unknown[:5]}")
    choices = list(classes) or sorted(set(truth.values()))

    n = len(rows)
    blank = set(rng.choice(n, size=int(round(partial * n)), replace=False).tolist()) if n else set()
    answered = [i for i in range(n) if i not in blank]
    n_noisy = int(round(noise * len(answered)))
    noisy = set(rng.choice(answered, size=n_noisy, replace=False).tolist()) if n_noisy else set()

    for index, row in enumerate(rows):
        true_label = truth[ids[index]]
        if index in blank:
            row[label_at] = ""
        elif index in noisy:
            wrong = [c for c in choices if c != true_label]
            row[label_at] = str(rng.choice(wrong)) if wrong else true_label
        else:
            row[label_at] = true_label

    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(records[0])
    writer.writerows(rows)
    stats = AnswerStats(rows=n, labelled=len(answered), blank=len(blank), noisy=len(noisy))
    return out.getvalue().encode("utf-8-sig"), stats


def pending_query_sets(client: Any, cfg: LoopConfig) -> list[dict]:
    """Query sets in the outbox with no answer in the inbox or processed folder.

    Returns boto3 object dicts (``Key``, ``LastModified``, ...) plus ``round`` (int),
    in round order.
    """
    outbox = cfg.task_prefix("outbox_prefix")
    answered_keys = [
        (key, prefix)
        for prefix in (cfg.task_prefix("inbox_prefix"), cfg.task_prefix("processed_prefix"))
        for key in s3.list_keys(client, cfg.bucket, prefix)
    ]
    pending = []
    for obj in s3.list_objects(client, cfg.bucket, outbox):
        match = _QUERY_KEY.fullmatch(obj["Key"][len(outbox) :])
        if not match:
            continue
        round_number = int(match.group(1))
        if not any(match_inbox_key(k, round_number, prefix) for k, prefix in answered_keys):
            pending.append({**obj, "round": round_number})
    return sorted(pending, key=lambda obj: obj["round"])


def run_once(
    client: Any,
    cfg: LoopConfig,
    truth: Mapping[str, str],
    *,
    noise: float = 0.0,
    partial: float = 0.0,
    seed: int = 0,
    delay_seconds: float = 0.0,
    wait_for_delay: bool = True,
    echo: Callable[[str], None] = print,
) -> list[str]:
    """Answer every pending query set once; returns the inbox keys written.

    ``delay_seconds`` is counted from each query set's upload time (S3 LastModified):
    a younger one is waited for when ``wait_for_delay``, else left for a later call.
    Each round's answer is drawn from ``numpy.random.default_rng([seed, round])``, so
    it does not depend on which other rounds were answered in the same call.
    """
    written: list[str] = []
    classes = list(cfg.classes)
    for obj in pending_query_sets(client, cfg):
        age = (datetime.now(UTC) - obj["LastModified"]).total_seconds()
        if age < delay_seconds:
            if not wait_for_delay:
                continue
            time.sleep(delay_seconds - age)
        round_number = obj["round"]
        query_bytes = s3.read_bytes(client, cfg.bucket, obj["Key"])
        rng = np.random.default_rng([seed, round_number])
        answer, stats = answer_query_set_with_stats(
            query_bytes, truth, noise=noise, partial=partial, classes=classes, rng=rng
        )
        inbox_key = f"{cfg.task_prefix('inbox_prefix')}round-{round_number}.csv"
        s3.write_bytes(client, cfg.bucket, inbox_key, answer, content_type="text/csv")
        echo(
            f"answered s3://{cfg.bucket}/{obj['Key']} -> s3://{cfg.bucket}/{inbox_key}: "
            f"{stats.rows} rows, {stats.labelled} labelled ({stats.noisy} wrong on purpose), "
            f"{stats.blank} left blank"
        )
        written.append(inbox_key)
    return written


# --- seed ------------------------------------------------------------------------------------
def sample_seed_files(
    config: LoopConfig, out_dir: Path, *, size: int = 230, eval_size: int = 1000
) -> tuple[Path, Path | None]:
    """Random labelled seed (and evaluation) CSVs ``id,label`` from the corpus's ground
    truth column, as ``al sample-seed`` writes them. Returns (labels, evaluation or None).
    """
    from al_tasks.loop.seeding import sample_seed_files as write_seed_files

    out_dir.mkdir(parents=True, exist_ok=True)
    labels, evaluation = out_dir / "labels.csv", out_dir / "evaluation.csv"
    write_seed_files(config, size=size, out=labels, eval_size=eval_size, eval_out=evaluation)
    return labels, (evaluation if eval_size else None)


def upload_seed(
    client: Any, bucket: str, task: str, labels: Path, evaluation: Path | None, *, seed_prefix: str = "seed"
) -> list[str]:
    """Put the seed files where the DAG's ``seed`` task reads them; returns their URIs."""
    uris = [s3.upload_file(client, labels, bucket, f"{seed_prefix}/{task}/labels.csv")]
    if evaluation is not None:
        uris.append(s3.upload_file(client, evaluation, bucket, f"{seed_prefix}/{task}/evaluation.csv"))
    return uris


# --- simulated labeller -------------------------------------------------------------------
class LabellerThread(threading.Thread):
    """The simulated labeller (``devstack.labeller.run_once``) polling the outbox.

    ``delay_seconds``: answer a query set only this long after it appeared, as a person
    would (the DAG's sensor is then seen waiting, deferred, in the UI).
    """

    def __init__(
        self,
        client: Any,
        config: LoopConfig,
        *,
        poll_seconds: float = 3.0,
        noise: float = 0.0,
        delay_seconds: float = 0.0,
        echo: Callable[[str], None] = say,
    ) -> None:
        super().__init__(name="simulated-labeller", daemon=True)

        self.client, self.config, self.poll_seconds, self.noise, self.echo = client, config, poll_seconds, noise, echo
        self.delay_seconds = delay_seconds
        self.truth = load_truth(
            config.corpus_path,
            id_column=config.id_column,
            label_column=config.label_column,
            positive_class=config.positive_class,
        )
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                run_once(
                    self.client,
                    self.config,
                    self.truth,
                    noise=self.noise,
                    delay_seconds=self.delay_seconds,
                    wait_for_delay=False,
                    echo=lambda line: self.echo(f"labeller: {line}"),
                )
            except Exception as exc:  # keep polling: S3 may be briefly unavailable
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.echo(f"labeller: error {type(exc).__name__}: {exc}")
            self.stopping.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def _parser() -> argparse.ArgumentParser:
    from al_tasks.cli import add_setting_flags

    parser = argparse.ArgumentParser(
        prog="python -m devstack.labeller",
        description="Simulated labeller: answers query sets in the S3 outbox from ground truth.",
    )
    parser.add_argument("--once", action="store_true", help="answer what is pending, then exit")
    parser.add_argument("--poll-seconds", type=float, default=5.0, help="polling interval (default 5)")
    parser.add_argument("--max-seconds", type=float, default=0.0, help="stop polling after this long (0: never)")
    parser.add_argument(
        "--delay-seconds",
        type=float,
        default=0.0,
        help="answer a query set only this long after it was uploaded (default 0)",
    )
    parser.add_argument("--noise", type=float, default=0.0, help="fraction of wrong labels (0..1)")
    parser.add_argument("--partial", type=float, default=0.0, help="fraction left blank (0..1)")
    add_setting_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    from al_tasks.cli import config_from_args

    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    truth = load_truth(
        cfg.corpus_path, id_column=cfg.id_column, label_column=cfg.label_column, positive_class=cfg.positive_class
    )
    client = s3.s3_client(cfg.s3_endpoint_url)
    options = {"noise": args.noise, "partial": args.partial, "seed": cfg.seed, "delay_seconds": args.delay_seconds}

    def echo(line: str) -> None:
        print(line, flush=True)

    if args.once:
        run_once(client, cfg, truth, wait_for_delay=True, echo=echo, **options)
        return 0
    deadline = time.monotonic() + args.max_seconds if args.max_seconds > 0 else None
    echo(
        f"watching s3://{cfg.bucket}/{cfg.task_prefix('outbox_prefix')} at {cfg.s3_endpoint_url} "
        f"every {args.poll_seconds:g} s"
    )
    try:
        while deadline is None or time.monotonic() < deadline:
            try:
                run_once(client, cfg, truth, wait_for_delay=False, echo=echo, **options)
            except Exception as exc:  # keep watching: S3 may be restarting, a file may be bad
                print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            pause = args.poll_seconds
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
