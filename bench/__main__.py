"""``python -m bench``: run the benchmarks, write bench/results/ and the README tables.

    python -m bench                      # both, full size (~1 h on 2 cores)
    python -m bench --only label         # label efficiency only
    python -m bench --only throughput    # throughput and memory only
    python -m bench --quick              # small sizes, a few minutes; results to <workdir>/results-quick
    python -m bench --only throughput --sizes 1000000,3000000   # the issue's throughput run (quiet machine)
    python -m bench --only throughput --validate   # 50k and 200k, no modAL ladders; results to <workdir>
    python -m bench --only throughput --no-modal   # without the seed-recipe / modAL query baselines
    python -m bench --only throughput --rebuild    # README tables again from bench/results/throughput.*

Scratch (feature stores, synthetic corpora, the MLflow DB) goes to ``--workdir``
(default /tmp/al-bench, or $AL_BENCH_WORKDIR), never into the repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from bench.common import BENCH_DIR, DEFAULT_WORKDIR, RESULTS_DIR, machine_info, replace_section, say


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["label", "throughput"], help="run one benchmark")
    parser.add_argument("--quick", action="store_true", help="small sizes; results go to <workdir>/results-quick")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="scratch directory (default %(default)s)")
    parser.add_argument("--results", type=Path, help=f"results directory (default {RESULTS_DIR})")
    parser.add_argument("--seeds", type=int, help="label efficiency: number of seeds (0..n-1)")
    parser.add_argument("--max-evals", type=int, help="label efficiency: hyperopt trials per tune")
    parser.add_argument("--rounds", type=int, help="label efficiency: query rounds after the seed labels")
    parser.add_argument("--workers", type=int, help="label efficiency: chains run concurrently")
    parser.add_argument("--arms", type=str, help="label efficiency: comma-separated arms (strategies, seed_recipe)")
    parser.add_argument(
        "--tasks", type=str, help="label efficiency: comma-separated tasks (product_group, debt_collection)"
    )
    parser.add_argument("--no-mlflow", action="store_true", help="label efficiency: do not log to MLflow")
    parser.add_argument("--sizes", type=str, help="throughput: comma-separated narratives (default 1000000,3000000)")
    parser.add_argument(
        "--validate", action="store_true", help="throughput: 50k and 200k without the modAL ladders (shared machine)"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="tables, plots, README sections again from the results (no measuring)"
    )
    parser.add_argument(
        "--no-modal", action="store_true", help="throughput: skip the seed-recipe and modAL query baselines"
    )
    args = parser.parse_args(argv)

    from bench import label_efficiency, throughput

    quick = args.quick or args.validate
    results = args.results or (args.workdir / "results-quick" if quick else RESULTS_DIR)
    # The README's tables are regenerated only from full runs into the committed results.
    readme = BENCH_DIR / "README.md" if results.resolve() == RESULTS_DIR.resolve() else None
    started = time.perf_counter()
    if args.rebuild:
        if args.only in (None, "label"):
            label_efficiency.rebuild(results, readme)
        if args.only in (None, "throughput"):
            throughput.rebuild(results, readme)
        return 0
    if args.only in (None, "label"):
        settings = label_efficiency.QUICK if args.quick else label_efficiency.LabelSettings()
        changes = {}
        if args.seeds:
            changes["seeds"] = tuple(range(args.seeds))
        for name in ("max_evals", "rounds", "workers"):
            if getattr(args, name):
                changes[name] = getattr(args, name)
        if args.no_mlflow:
            changes["mlflow"] = False
        if args.arms:
            changes["strategies"] = tuple(a.strip() for a in args.arms.split(",") if a.strip())
        if args.tasks:
            changes["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
        settings = dataclasses.replace(settings, **changes)
        say(f"== label efficiency: {settings}")
        label_efficiency.run(settings, workdir=args.workdir, results_dir=results, readme=readme)
    if args.only in (None, "throughput"):
        settings = throughput.QUICK if args.quick else throughput.ThroughputSettings()
        settings = throughput.VALIDATE if args.validate else settings
        if args.sizes:
            settings = dataclasses.replace(settings, sizes=tuple(int(s) for s in args.sizes.split(",")))
        if args.no_modal:
            settings = dataclasses.replace(settings, modal_baselines=False)
        say(f"== throughput: {settings}")
        throughput.run(settings, workdir=args.workdir, results_dir=results, readme=readme)
    if readme is not None:
        info = machine_info()
        versions = ", ".join(
            f"{k} {info[k]}"
            for k in (
                "pyspark",
                "scikit-learn",
                "modAL-python",
                "hyperopt",
                "mlflow",
                "pandas",
                "pyarrow",
                "numpy",
                "scipy",
            )
            if k in info
        )
        replace_section(
            readme,
            "machine",
            (
                f"{info['nproc']} cores ({info['cpu']}), {info['memory_gib']} GiB memory, {info['os']}; "
                f"Python {info['python']}, {info['java']}; {versions}. Spark local[2], driver memory 4g "
                f"(LoopConfig defaults otherwise)."
            ),
        )
    say(f"== all done in {(time.perf_counter() - started) / 60:.1f} min; results in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
