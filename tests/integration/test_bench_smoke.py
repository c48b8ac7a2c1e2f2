"""Smoke test of the benchmarks (bench/): both run end to end on a tiny size, so they
cannot rot. Real data, real Spark; the numbers themselves mean nothing at this size.

The full benchmarks are ``python -m bench`` (``make bench``), not part of ``make test``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench import label_efficiency, throughput

pytestmark = pytest.mark.slow


def test_label_efficiency_tiny(tmp_path):
    # Four arms keep it fast: the exact top-k path (margin; uncertainty and entropy differ
    # only in the score), a candidate-set strategy (badge; ranked batch and balanced margin
    # take the same path), the seed recipe's settings and the random baseline.
    settings = label_efficiency.LabelSettings(
        seeds=(0,),
        rounds=2,
        max_evals=2,
        eval_size=200,
        seed_labels=40,
        batch=20,
        corpus_limit=1000,
        strategies=("margin", "badge", "seed_recipe", "random"),
        workers=1,
        mlflow=True,
    )
    out = label_efficiency.run(settings, workdir=tmp_path / "work", results_dir=tmp_path / "results")

    curves = out["curves"]
    n_strategies, n_tasks = len(settings.strategies), len(label_efficiency.TASKS)
    # One point per round plus the seed labels, for every task and strategy.
    assert len(curves) == n_tasks * n_strategies * (settings.rounds + 1)
    for _, part in curves.groupby(["task", "strategy"]):
        assert part.sort_values("round")["n_labels"].tolist() == [40, 60, 80]
    assert curves["accuracy"].between(0, 1, inclusive="right").all()
    assert curves["macro_f1"].between(0, 1).all()
    # Round 0 is shared: every arm that tunes alike starts from the same seed labels and model.
    loop_defaults = curves[(curves["round"] == 0) & (curves["strategy"] != "seed_recipe")]
    assert (loop_defaults.groupby("task")["accuracy"].nunique() == 1).all()
    # Every tuned round carries the bound check; the seed recipe searches C <= e^1 only.
    assert set(curves["c_at_bound"]) <= {"no", "low", "high"}
    assert (curves.loc[curves["strategy"] == "seed_recipe", "C"] <= np.exp(1.0)).all()
    assert (curves.loc[curves["strategy"] == "seed_recipe", "class_weight"] == "None").all()
    assert curves.loc[curves["round"] < settings.rounds, "query_seconds"].gt(0).all()

    # The seed recipe runs on plain TF-IDF, the others on the LSA features (200 more columns).
    widths = out["meta"]["num_features"]
    assert set(widths) == {"lsa", "tfidf"} and widths["lsa"] == widths["tfidf"] + 200

    final = out["final"]
    assert len(final) == n_tasks * n_strategies
    assert final["auc_accuracy_mean"].between(0, 1).all()
    assert (final["tuned_rounds"] == settings.rounds + 1).all()
    assert final["c_at_bound_share"].between(0, 1).all()
    # Random reaches its own final accuracy by definition.
    rand = final[final["strategy"] == "random"]
    assert (rand["labels_to_random_accuracy"] <= rand["n_labels"]).all()

    for path in out["files"]:
        assert path.exists() and path.stat().st_size > 0, path
    for task in label_efficiency.TASKS:
        png = tmp_path / "results" / f"label_efficiency_{task}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "work" / "workspace" / "mlflow.db").exists()


def test_throughput_tiny(tmp_path):
    settings = throughput.ThroughputSettings(
        sizes=(2_000,),
        top_k=20,
        ranked_batch=20,
        n_labelled=150,
        seed_recipe_sizes=(200,),
        modal_ranked_sizes=(400,),
        time_limit_s=120,
        warmup=False,
    )
    out = throughput.run(settings, workdir=tmp_path / "work", results_dir=tmp_path / "results")
    rows = out["rows"]

    def row(op, impl, status="measured"):
        # "measured (loaded)": taken on a busy machine; still measured.
        hit = rows[(rows["operation"] == op) & (rows["implementation"] == impl) & rows["status"].str.startswith(status)]
        assert len(hit) == 1, (op, impl, rows[["operation", "implementation"]])
        return hit.iloc[0]

    feat = row("featurize", "project (Spark)")
    assert feat["docs_per_s"] > 0 and feat["peak_total_gib"] > 0 and feat["load_during"] >= 0
    assert row("featurize", "scikit-learn (2 processes)")["docs_per_s"] > 0
    for op, impl in (
        ("query top-k", "project (Spark, 2nd)"),
        ("ranked batch", "project (Spark)"),
        ("query top-k", "modAL in memory (CSR)"),
    ):
        r = row(op, impl)
        assert r["seconds"] > 0, r
    # The Spark path and plain modAL pick exactly the same items.
    assert out["meta"]["notes"]["modal_same_ids_2000"] is True
    seed = row("query top-k", "seed recipe (dense, per chunk)")
    assert seed["pool_docs"] == 200 and seed["seconds"] > 0, seed["note"]
    assert 0 <= out["meta"]["notes"]["seed_recipe_recall_200"] <= 1
    assert row("ranked batch", "modAL in memory (CSR)")["pool_docs"] == 400
    # Baselines run on fewer rows than the pool are extrapolated to its size.
    for impl in ("seed recipe (dense, per chunk)", "modAL in memory (CSR)"):
        est = rows[(rows["implementation"] == impl) & (rows["status"] == "extrapolated")]
        assert len(est) == 1 and est.iloc[0]["pool_docs"] == 2_000 and est.iloc[0]["seconds"] > 0
    for name in settings.alternatives:
        assert row("featurize", throughput.ALTERNATIVE_IMPL[name])["docs_per_s"] > 0
    for name in settings.query_alternatives:
        assert row("query top-k", f"project (Spark, {name}, 2nd)")["seconds"] > 0
        assert row("ranked batch", f"project (Spark, {name})")["seconds"] > 0
    n_rows = 6 + len(settings.alternatives) + 2 * len(settings.query_alternatives)
    assert len(out["summary"]) == n_rows and np.isfinite(out["seconds"])
    for name in ("throughput.csv", "throughput_targets.csv", "throughput.json", "throughput.md", "throughput.png"):
        assert (tmp_path / "results" / name).stat().st_size > 0
