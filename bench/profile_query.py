"""Where the driver's memory and time go in a query of a large pool, step by step.

The pool is a feature set built as the throughput bench builds one (its synthesizer,
then ``featurize``). Two modes, each in a process of its own so one step's memory is not
charged to the next::

    python -m bench.profile_query steps <features_root> <out.json>
    python -m bench.profile_query fresh <features_root> {top100,ranked} <out.json>
    python -m bench.profile_query report <before_dir> <after_dir> <out.txt>

``steps`` runs the parts of ``al_tasks.ml.query.query`` one after another (pool ids,
the Spark top-k scan, the re-ranking's feature reads, the ranked-batch pick); ``fresh``
runs one whole ``query()`` in a fresh process and reads the driver's ``VmHWM`` after it.
Each step records the driver's RSS before it, its peak during it (sampled every 50 ms by
:class:`bench.common.PeakRSS`), the seconds and the 1-minute load average. The model is
fitted once, on 1,230 random pool docs as in the throughput bench, and pickled beside
the output so every process scores with the same one. ``report`` writes the text table
of a before and an after run (the directories holding their JSON files).
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import PeakRSS, bench_spark

N_LABELLED = 1230


def rss_gib() -> float:
    """This process's resident set size now, GiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def high_water_gib() -> float:
    """This process's peak resident set size so far (``VmHWM``), GiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 2**20 for line in status if line.startswith("VmHWM"))


def measure(rows: list[dict], name: str, work: Callable[[], object]) -> object:
    """Run ``work()``, append its row (seconds, driver RSS before/peak/after, load) to ``rows``."""
    gc.collect()
    before = rss_gib()
    started = time.perf_counter()
    with PeakRSS(interval=0.05) as peak:
        out = work()
    rows.append(
        {
            "step": name,
            "seconds": round(time.perf_counter() - started, 2),
            "driver_rss_before_gib": round(before, 3),
            "driver_peak_gib": round(max(peak.peaks["driver_python"], rss_gib()), 3),
            "driver_rss_after_gib": round(rss_gib(), 3),
            "jvm_peak_gib": round(peak.peaks["jvm"], 3),
            "load_before": round(peak.load_before, 2),
            "load_max": round(peak.load_max, 2),
        }
    )
    print(json.dumps(rows[-1]), flush=True)
    return out


def measured_model(feature_set, path: Path):
    """(model, labelled ids): fitted once on ``N_LABELLED`` random pool docs, then loaded from ``path``."""
    if not path.exists():
        from al_tasks.ml.features import load_features
        from al_tasks.ml.model import TextClassifier
        from bench.throughput import PRODUCT_GROUPS

        labelled = np.sort(np.random.default_rng(0).choice(feature_set.ids(), N_LABELLED, replace=False))
        labels = pd.read_parquet(
            feature_set.docs_path, columns=["id", "label"], filters=[("id", "in", labelled.tolist())]
        )
        _, X = load_features(feature_set, labelled)
        model = TextClassifier(classes=PRODUCT_GROUPS, C=1.0, penalty="l2").fit(
            X, labels.set_index("id")["label"].loc[labelled].to_numpy(dtype=object)
        )
        path.write_bytes(pickle.dumps((model, labelled)))
    return pickle.loads(path.read_bytes())


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "report":
        Path(argv[3]).write_text(report(Path(argv[1]), Path(argv[2])))
        return
    from al_tasks.config import LoopConfig
    from al_tasks.ml import query as q
    from al_tasks.ml.features import FeatureSet, load_features
    from al_tasks.ml.strategies import get_strategy, ranked_batch

    feature_set = FeatureSet.load(argv[1])
    out = Path(argv[-1])
    rows: list[dict] = []
    config = LoopConfig(workspace=str(out.parent / "workspace"), spark_master="local[2]")
    spark = measure(rows, "start Spark session", lambda: bench_spark(config))
    model, labelled = measured_model(feature_set, out.parent / "profile_query_model.pkl")
    if mode == "fresh":
        overrides = (
            {"strategy": "margin", "batch_size": 100}
            if argv[2] == "top100"
            else {"strategy": "ranked_batch", "batch_size": 500}
        )
        result = measure(
            rows,
            f"query() {argv[2]}",
            lambda: q.query(
                feature_set,
                model,
                config.with_overrides(overrides),
                exclude_ids=labelled,
                labelled_ids=labelled,
                spark=spark,
            ),
        )
        rows.append({"step": "driver VmHWM after the query", "driver_peak_gib": round(high_water_gib(), 3)})
        rows.append({"step": "chosen ids", "ids": result.items["id"].tolist()})
    else:
        measure(rows, "FeatureSet.ids()", feature_set.ids)
        measure(rows, "pool ids", lambda: q.pool_ids(feature_set, labelled))
        margin, ranked = get_strategy("margin"), get_strategy("ranked_batch")
        measure(
            rows, "score_pool_top_k k=100", lambda: q.score_pool_top_k(feature_set, model, margin, 100, labelled, spark)
        )
        top = measure(
            rows,
            "score_pool_top_k k=5000",
            lambda: q.score_pool_top_k(feature_set, model, ranked, 5000, labelled, spark),
        )
        _, X_candidates = measure(
            rows, "load_features(5,000 candidates)", lambda: load_features(feature_set, top["id"])
        )
        _, X_labelled = measure(rows, "load_features(1,230 labelled)", lambda: load_features(feature_set, labelled))
        measure(
            rows,
            "ranked_batch(500 of 5,000)",
            lambda: ranked_batch(top["score"].to_numpy(), X_candidates, X_labelled, 500),
        )
    out.write_text(json.dumps(rows, indent=1))


def report(before: Path, after: Path) -> str:
    """Text table of the steps and fresh runs in ``before`` and ``after``."""
    lines = []
    for label, folder in (("before", before), ("after", after)):
        for name in ("steps", "fresh-top100", "fresh-ranked"):
            path = folder / f"{name}.json"
            if not path.exists():
                continue
            lines.append(f"[{label}] {name}")
            for row in json.loads(path.read_text()):
                if "seconds" in row:
                    lines.append(
                        f"  {row['step']:<40} {row['seconds']:>6.2f} s  driver RSS {row['driver_rss_before_gib']:.2f}"
                        f" -> peak {row['driver_peak_gib']:.2f} -> {row['driver_rss_after_gib']:.2f} GiB"
                        f"  (JVM peak {row['jvm_peak_gib']:.2f})  load {row['load_before']:.1f}/{row['load_max']:.1f}"
                    )
                elif "driver_peak_gib" in row:
                    lines.append(f"  {row['step']:<40} {row['driver_peak_gib']:.2f} GiB")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(sys.argv[1:])
