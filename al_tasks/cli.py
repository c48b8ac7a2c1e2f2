"""Command line: one round by hand, or each stage alone.

    al sample-seed --size 230 --out seed.csv      # random labelled seed from a ground-truth column
    al seed --labels seed.csv                     # start the task (splits off the evaluation set)
    al featurize
    al tune --round 1                             # tune + evaluate + register in MLflow
    al query --round 1 --model-version 3
    al round --round 1                            # all of the above after seeding

Settings: ``AL_*`` environment variables, then ``--set name=value`` (any LoopConfig
field) and the shortcuts below. ``python -m al_tasks`` is the same program.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from al_tasks.config import ConfigError, LoopConfig, config_fields_doc


def _config(args) -> LoopConfig:
    overrides = {}
    for item in args.set or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected name=value")
        key, value = item.split("=", 1)
        overrides[key.strip()] = value
    for name in ("workspace", "task", "corpus_path", "strategy", "batch_size", "max_evals", "spark_master",
                 "label_column", "positive_class", "eval_labels_path"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if args.classes is not None:
        overrides["classes"] = args.classes
    return LoopConfig.from_env().with_overrides(overrides)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _table(rows: list[tuple[str, object]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def cmd_sample_seed(cfg: LoopConfig, args) -> dict:
    """Write a random labelled seed (and optionally an evaluation file) from ground truth."""
    import numpy as np
    import pandas as pd

    from al_tasks.corpus import binary_labels, read_corpus

    corpus = read_corpus(cfg.corpus_path, cfg)
    if "label" not in corpus.docs:
        raise ConfigError(f"{cfg.corpus_path}: no ground-truth column {cfg.label_column!r} to sample a seed from")
    docs = corpus.docs
    labels = binary_labels(docs["label"], cfg.positive_class) if cfg.positive_class else docs["label"].to_numpy()
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(docs))
    seed_rows, eval_rows = order[: args.size], order[args.size: args.size + args.eval_size]
    pd.DataFrame({"id": docs["id"].to_numpy()[seed_rows], "label": labels[seed_rows]}).to_csv(args.out, index=False)
    result = {"seed_labels": str(args.out), "n_seed": len(seed_rows)}
    if args.eval_size:
        eval_out = Path(args.eval_out or Path(args.out).with_name("evaluation.csv"))
        pd.DataFrame({"id": docs["id"].to_numpy()[eval_rows], "label": labels[eval_rows]}).to_csv(eval_out, index=False)
        result.update(eval_labels=str(eval_out), n_eval=len(eval_rows))
    return result


def cmd_seed(cfg: LoopConfig, args) -> dict:
    from al_tasks.featurize import featurize
    from al_tasks.workspace import TaskWorkspace

    fs = featurize(cfg, log=_log)
    return TaskWorkspace(cfg).seed(args.labels, fs.ids(), log=_log)


def cmd_featurize(cfg: LoopConfig, args) -> dict:
    from al_tasks.featurize import featurize

    fs = featurize(cfg, log=_log)
    return {"features": str(fs.root), "n_docs": fs.n_docs, "reused": fs.reused, "seconds": round(fs.seconds, 1)}


def cmd_tune(cfg: LoopConfig, args) -> dict:
    from al_tasks.rounds import train_round

    return train_round(cfg, args.round, log=_log)


def cmd_query(cfg: LoopConfig, args) -> dict:
    from al_tasks.rounds import query_round

    result = query_round(cfg, args.round, model_version=args.model_version, log=_log)
    result.pop("query_ids")
    return result


def cmd_round(cfg: LoopConfig, args) -> dict:
    from al_tasks.rounds import run_round

    return run_round(cfg, args.round, log=_log)


def cmd_config(cfg: LoopConfig, args) -> dict:
    return {name: getattr(cfg, name) for name, _, _ in config_fields_doc()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="al", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--set", action="append", metavar="NAME=VALUE", help="any LoopConfig setting (repeatable)")
    common.add_argument("--workspace")
    common.add_argument("--task")
    common.add_argument("--corpus", dest="corpus_path")
    common.add_argument("--label-column")
    common.add_argument("--classes", help="comma-separated allowed labels")
    common.add_argument("--positive-class", help="binary task: this class vs rest")
    common.add_argument("--eval-labels", dest="eval_labels_path")
    common.add_argument("--strategy")
    common.add_argument("--batch-size")
    common.add_argument("--max-evals")
    common.add_argument("--spark-master")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample-seed", parents=[common], help="random labelled seed from the ground-truth column")
    p.add_argument("--size", type=int, default=230)
    p.add_argument("--eval-size", type=int, default=0, help="also write a random evaluation file of this size")
    p.add_argument("--out", default="seed_labels.csv")
    p.add_argument("--eval-out")
    p.set_defaults(func=cmd_sample_seed)
    p = sub.add_parser("seed", parents=[common], help="start a task from a labelled CSV (id,label)")
    p.add_argument("--labels", required=True)
    p.set_defaults(func=cmd_seed)
    sub.add_parser("featurize", parents=[common], help="fit and write features (skipped when unchanged)").set_defaults(func=cmd_featurize)
    for name, func, help_text in (("tune", cmd_tune, "tune, evaluate and register a model"),
                                  ("round", cmd_round, "featurize, tune, evaluate, promote and query")):
        p = sub.add_parser(name, parents=[common], help=help_text)
        p.add_argument("--round", type=int, default=1)
        p.set_defaults(func=func)
    p = sub.add_parser("query", parents=[common], help="query the pool with a registered model version")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--model-version", required=True)
    p.set_defaults(func=cmd_query)
    sub.add_parser("config", parents=[common], help="print the effective settings").set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    from al_tasks.tracking import disable_mlflow_telemetry

    disable_mlflow_telemetry()
    args = build_parser().parse_args(argv)
    try:
        cfg = _config(args)
        result = args.func(cfg, args)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        rows = [(k, f"{v:.4f}" if isinstance(v, float) else v) for k, v in result.items()
                if not isinstance(v, (dict, list))]
        print("\nSummary\n" + _table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
