"""``al``: every stage of the loop, the daily ingest and the stream scorer from a shell.

    al sample-seed --size 230 --out seed.csv      # random labelled seed from the ground-truth column
    al seed --labels seed.csv                     # start the task (splits off the evaluation set)
    al featurize
    al tune --round 1                             # tune + evaluate + register in MLflow
    al query --round 1 --model-version 3
    al round --round 1                            # all of the above after seeding
    al daily --date 2019-02-19 --to 2019-02-21    # score new complaints of those days
    al stream --source DIR --output DIR --checkpoint DIR --available-now
    al config                                     # every setting, its value and meaning
    al labels export --out labels.csv [--history] # the label store as a CSV for people
    al labels migrate                             # a CSV label store into the configured database

Settings: every :class:`~al_tasks.config.LoopConfig` field is a flag of every command
(``--batch-size 50``; ``al <command> --help`` lists them by section), generated from
the field's metadata; ``AL_*`` environment variables set their defaults, and
``--set name=value`` takes any field by name. ``python -m al_tasks`` is the same program.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from al_tasks.config import SECTIONS, LoopConfig, masked_url, settings
from al_tasks.errors import ActiveLearningError, ConfigError

log = logging.getLogger("al_tasks.cli")


# --- settings as flags --------------------------------------------------------------------
def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per LoopConfig field, grouped by section (default: keep the current value)."""
    for section, title in SECTIONS.items():
        group = parser.add_argument_group(f"settings: {title}")
        for info in settings():
            if info.section != section or not info.cli:
                continue
            extra = f" One of: {', '.join(info.choices)}." if info.choices else ""
            group.add_argument(
                *info.flags,
                dest=f"setting_{info.name}",
                metavar=info.type_name.upper().replace(" ", "_"),
                help=f"{info.title}: {info.description}{extra} (default {_shown(info.default)})",
            )
    parser.add_argument(
        "--set", action="append", metavar="NAME=VALUE", default=[], help="any setting by its field name (repeatable)"
    )


def _shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value) or "empty"
    return repr(value) if value != "" else "empty"


def setting_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The settings given on the command line (``--set`` < the setting flags), as strings."""
    overrides: dict[str, object] = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected name=value")
        overrides[key.strip()] = value
    for info in settings():
        value = getattr(args, f"setting_{info.name}", None)
        if value is not None:
            overrides[info.name] = value
    return overrides


def config_from_args(args: argparse.Namespace, environ=None) -> LoopConfig:
    """Defaults < ``AL_*`` environment < ``--set`` < the setting flags."""
    return LoopConfig.from_env(environ).with_overrides(setting_overrides(args))


# --- commands ------------------------------------------------------------------------------
def cmd_sample_seed(cfg: LoopConfig, args) -> dict:
    """Write a random labelled seed (and optionally an evaluation file) from ground truth."""
    from al_tasks.loop.seeding import sample_seed_files

    return sample_seed_files(
        cfg,
        size=args.size,
        out=Path(args.out),
        eval_size=args.eval_size,
        eval_out=Path(args.eval_out) if args.eval_out else None,
    )


def cmd_seed(cfg: LoopConfig, args) -> dict:
    from al_tasks.loop.seeding import seed_task
    from al_tasks.ml.features import featurize

    return seed_task(cfg, args.labels, featurize(cfg).ids())


def cmd_featurize(cfg: LoopConfig, args) -> dict:
    from al_tasks.loop.rounds import featurize_corpus

    return featurize_corpus(cfg)


def cmd_tune(cfg: LoopConfig, args) -> dict:
    from al_tasks.loop.rounds import train_round

    return train_round(cfg, args.round)


def cmd_query(cfg: LoopConfig, args) -> dict:
    from al_tasks.loop.rounds import query_round

    return query_round(cfg, args.round, model_version=args.model_version)


def cmd_round(cfg: LoopConfig, args) -> dict:
    from al_tasks.loop.rounds import run_round

    return run_round(cfg, args.round)


def cmd_config(cfg: LoopConfig, args) -> dict:
    return {k: masked_url(v) if isinstance(v, str) else v for k, v in cfg.as_dict().items()}


def cmd_labels(cfg: LoopConfig, args) -> dict:
    """``al labels export`` / ``al labels migrate`` (see :mod:`al_tasks.labelling.store_sql`)."""
    from al_tasks.labelling.store_sql import SqlLabelStore, migrate_csv_store
    from al_tasks.workspace import TaskWorkspace

    workspace = TaskWorkspace(cfg)
    if args.action == "migrate":
        # Opened directly, not through workspace.store, which would import on first open.
        store = SqlLabelStore(workspace.label_store_url, cfg.task)
        return migrate_csv_store(Path(args.csv) if args.csv else workspace.legacy_store_path, store)
    if not args.out:
        raise ConfigError("al labels export needs --out FILE")
    store = workspace.store
    rows = store.export_csv(args.out, history=args.history)
    log.info("wrote %s %s rows of %s to %s", rows, "history" if args.history else "current", store.location, args.out)
    return {"rows": rows, "out": str(args.out), "history": bool(args.history), "store": store.location}


def cmd_daily(cfg: LoopConfig, args) -> dict:
    from al_tasks.io.complaints import day_range
    from al_tasks.io.s3 import s3_client
    from al_tasks.scoring.daily import run_days

    landing = args.landing or None
    client = s3_client(cfg.s3_endpoint_url) if landing and landing.startswith("s3://") else None
    results = run_days(cfg, day_range(args.date, args.to), landing=landing, alias=args.alias, s3_client=client)
    totals = {
        k: sum(r.get(k, 0) for r in results)
        for k in ("n_docs", "n_scored", "n_escalated", "n_review", "n_pool_added", "n_rejected")
    }
    unscored = [r["date"] for r in results if r["n_files"] and not r["scored"]]
    if unscored:
        log.warning(
            "NOTHING WAS SCORED on %s day(s) (%s ...): no model under alias %r", len(unscored), unscored[0], args.alias
        )
    return {
        "days": len(results),
        "days_with_files": sum(1 for r in results if r["n_files"]),
        **totals,
        "per_day": results,
    }


def cmd_stream(cfg: LoopConfig, args) -> dict:
    from al_tasks.scoring.stream import run_stream
    from al_tasks.spark import spark_session, stop_spark_if_started

    with stop_spark_if_started():
        return run_stream(
            cfg,
            args.source,
            args.output,
            args.checkpoint,
            available_now=args.available_now,
            processing_time=args.processing_time,
            alias=args.alias,
            max_files_per_trigger=args.max_files_per_trigger,
            grace_seconds=args.grace_seconds,
            spark=spark_session(cfg, app_name="al-stream"),
        )


# --- parser --------------------------------------------------------------------------------
def _command(sub, name: str, func, help_text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_setting_flags(parser)
    parser.set_defaults(func=func)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="al", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "sample-seed", cmd_sample_seed, "random labelled seed from the ground-truth column")
    p.add_argument("--size", type=int, default=230)
    p.add_argument("--eval-size", type=int, default=0, help="also write a random evaluation file of this size")
    p.add_argument("--out", default="seed_labels.csv")
    p.add_argument("--eval-out", help="default: evaluation.csv beside --out")
    _command(sub, "seed", cmd_seed, "start a task from a labelled CSV (id,label)").add_argument(
        "--labels", required=True
    )
    _command(sub, "featurize", cmd_featurize, "fit and write features (skipped when unchanged)")
    for name, func, help_text in (
        ("tune", cmd_tune, "tune, evaluate and register a model"),
        ("round", cmd_round, "featurize, tune, evaluate, promote and query"),
    ):
        _command(sub, name, func, help_text).add_argument("--round", type=int, default=1)
    p = _command(sub, "query", cmd_query, "query the pool with a registered model version")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--model-version", required=True)
    _command(sub, "config", cmd_config, "print the effective settings")
    p = _command(sub, "labels", cmd_labels, "export the label store as CSV, or migrate a CSV store into it")
    p.add_argument("action", choices=("export", "migrate"))
    p.add_argument("--out", help="export: the CSV file to write (spreadsheet-safe)")
    p.add_argument("--history", action="store_true", help="export: every row ever appended, not the current labels")
    p.add_argument("--csv", help="migrate: the CSV store to import (default <workspace>/<task>/labels/store.csv)")
    p = _command(sub, "daily", cmd_daily, "score new complaints of some days; escalate, review, pool")
    p.add_argument("--date", required=True, help="first day, YYYY-MM-DD")
    p.add_argument("--to", help="last day (inclusive); default: --date")
    p.add_argument("--landing", help="folder or s3://bucket/prefix of CFPB-format files (default <workspace>/landing)")
    p.add_argument("--alias", default="champion", help="registry alias of the model that scores")
    p = _command(sub, "stream", cmd_stream, "score complaint files as they land (Spark Structured Streaming)")
    p.add_argument("--source", required=True, help="folder new complaint files are dropped into")
    p.add_argument("--output", required=True, help="folder of the escalation/review lists")
    p.add_argument("--checkpoint", required=True, help="Spark checkpoint folder (the exactly-once record)")
    p.add_argument("--available-now", action="store_true", help="process what is there, then exit")
    p.add_argument("--processing-time", default="30 seconds", help="service mode: micro-batch interval")
    p.add_argument("--alias", default="champion")
    p.add_argument("--max-files-per-trigger", type=int)
    p.add_argument("--grace-seconds", type=float, default=60.0)
    return parser


# --- output --------------------------------------------------------------------------------
def _table(result: dict) -> str:
    rows = [
        (k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items() if not isinstance(v, (dict, list))
    ]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def _config_table(cfg: LoopConfig) -> str:
    lines = []
    for section, title in SECTIONS.items():
        lines.append(f"[{title}]")
        for info in settings():
            if info.section == section:
                value = getattr(cfg, info.name)
                shown = _shown(masked_url(value) if isinstance(value, str) else value)
                lines.append(f"  {info.name} = {shown}\n      {info.description}")
    return "\n".join(lines)


class _ProgressHandler(logging.StreamHandler):
    """The CLI's handler of the ``al_tasks`` loggers (one per process, replaced per run)."""


def configure_logging() -> None:
    """Progress lines of ``al_tasks`` with a time stamp on stderr; stdout carries the result."""
    product = logging.getLogger("al_tasks")
    for handler in [h for h in product.handlers if isinstance(h, _ProgressHandler)]:
        product.removeHandler(handler)
    handler = _ProgressHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    product.addHandler(handler)
    product.setLevel(logging.INFO)
    for noisy in ("py4j", "mlflow", "alembic", "hyperopt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    from al_tasks.tracking import disable_mlflow_telemetry

    disable_mlflow_telemetry()
    configure_logging()
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        cfg = config_from_args(args)
        result = args.func(cfg, args)
    except (ActiveLearningError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.command == "config":
        print(_config_table(cfg))
    else:
        print(f"\nSummary ({time.perf_counter() - started:.1f} s)\n" + _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
