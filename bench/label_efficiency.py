"""Label efficiency: every query strategy against random sampling, on real data.

For each task (multi-class ``Product group``; binary ``debt_collection`` vs ``rest``)
and each seed:

1. hold out a fixed random evaluation set (``eval_size`` docs, never in the pool);
2. draw ``seed_labels`` random labels from the rest (the pool);
3. for each arm, from the same seed labels: tune (al_tasks.ml.tune.tune, hyperopt
   TPE with ``max_evals`` trials, same for every arm), evaluate on the fixed set
   (al_tasks.ml.evaluate.evaluate), query ``batch`` ids (al_tasks.ml.query.query, the Spark
   path the DAG uses), "label" them from the ground-truth column, and repeat for
   ``rounds`` rounds.

An *arm* (:data:`ARMS`) is a feature setting (:data:`FEATURES`: plain TF-IDF, or
sublinear TF-IDF with a 200-dim LSA of the pool, with or without bigrams) and a query
strategy with the loop's tuning, or ``seed_recipe``: the seed recipe's settings
(plain TF-IDF, :data:`SEED_RECIPE`: margin sampling, C searched in e^-6 .. e^1 only, no
class weights, no re-search at the bound). ``random`` (on the ``lsa`` features) is the
baseline the targets compare with; ``random_tfidf`` shows what the features alone give.
Every round records the tuning bound check (``c_at_bound``, ``c_shifts``).

The corpus is featurized once per feature setting (al_tasks.ml.features.featurize, the
loop's code) and loaded once (load_features); one SparkSession serves the whole run.

Speed: liblinear's cost grows with the width of X (262,144 hashed columns) although
~1,000 short complaints touch only ~7,000 of them; al_tasks.ml.model.TextClassifier fits on
the columns its training rows use (an exact reformulation), which makes one tune of
24 trials take seconds instead of a minute and a half.

Independent (task, seed, strategy) chains run in threads; their tune + evaluate runs
in ``workers`` worker processes (tune is Python + liblinear and would serialise on the
GIL), and the Spark query of one chain overlaps the tuning of others. Every chain is
deterministic (seeded splits, tune, ties broken by id), so results do not depend on the
number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import math
import multiprocessing
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from al_tasks.config import SHIPPED_CORPUS, LoopConfig
from al_tasks.ml.evaluate import evaluate
from bench.common import (
    DEFAULT_WORKDIR,
    REPO_ROOT,
    RESULTS_DIR,
    bench_spark,
    machine_info,
    markdown_table,
    quiet_warnings,
    replace_section,
    say,
    write_json,
)

#: Feature settings compared (LoopConfig overrides of the featurizer; each is featurized
#: once and is part of the feature fingerprint). ``tfidf`` is the seed recipe's
#: representation; ``lsa`` adds sublinear TF and a 200-dim LSA of the whole pool's
#: TF-IDF (no labels used); ``bigram_lsa`` adds word bigrams on top.
FEATURES = {
    "tfidf": {"featurizer": "hashing_vectorizer", "sublinear_tf": False, "ngram_max": 1, "lsa_components": 0},
    "lsa": {"featurizer": "hashing_vectorizer", "sublinear_tf": True, "ngram_max": 1, "lsa_components": 200},
    "bigram_lsa": {"featurizer": "hashing_vectorizer", "sublinear_tf": True, "ngram_max": 2, "lsa_components": 200},
}
#: The seed recipe's settings (TF-IDF + tuned LR + modAL margin), as LoopConfig overrides.
SEED_RECIPE = {
    "strategy": "margin",
    "log_c_low": -6.0,
    "log_c_high": 1.0,
    "c_bound_shifts": 0,
    "search_class_weight": False,
}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One learning curve: a feature setting (key of :data:`FEATURES`) and LoopConfig
    overrides of the query strategy and tuning."""

    features: str
    overrides: dict

    @property
    def tuning(self) -> tuple:
        """What round 0 depends on: the features and every override but the strategy."""
        return (self.features, tuple(sorted((k, v) for k, v in self.overrides.items() if k != "strategy")))


#: Arm name -> Arm. Strategy names run on the ``lsa`` features with the loop's tuning;
#: ``*_tfidf`` / ``*_bigrams`` change only the features; ``seed_recipe`` is the seed
#: recipe's features and tuning; ``random`` is the baseline of the targets.
ARMS = {
    **{
        name: Arm("lsa", {"strategy": name})
        for name in ("margin", "badge", "balanced_margin", "ranked_batch", "uncertainty", "entropy")
    },
    "margin_bigrams": Arm("bigram_lsa", {"strategy": "margin"}),
    "margin_tfidf": Arm("tfidf", {"strategy": "margin"}),
    "badge_tfidf": Arm("tfidf", {"strategy": "badge"}),
    "seed_recipe": Arm("tfidf", SEED_RECIPE),
    "random_tfidf": Arm("tfidf", {"strategy": "random"}),
    "random": Arm("lsa", {"strategy": "random"}),
}
STRATEGIES = tuple(ARMS)
#: The arms of a full run (uncertainty and entropy rank a binary pool like margin).
DEFAULT_ARMS = tuple(a for a in ARMS if a not in ("uncertainty", "entropy"))
#: Baselines: never the "best arm" of a target.
BASELINES = ("random", "random_tfidf")
#: task name -> positive_class ("" = multi-class over Product group).
TASKS = {"product_group": "", "debt_collection": "debt_collection"}
#: Reference points of issue 12: the seed recipe at 1,030 labels, and the aims at 1,230.
REFERENCE = {
    "product_group": {
        "seed_recipe_labels": 1030,
        "seed_recipe_accuracy": 0.773,
        "seed_recipe_macro_f1": 0.709,
        "target_accuracy": 0.80,
        "target_macro_f1": 0.72,
    },
    "debt_collection": {
        "seed_recipe_labels": 1030,
        "seed_recipe_accuracy": 0.892,
        "seed_recipe_macro_f1": 0.851,
        "target_accuracy": 0.905,
        "target_macro_f1": 0.870,
    },
}
#: Issue 12's targets: task -> (what, column of the final table, bound, "min" or "max").
TARGETS = {
    "debt_collection": (
        ("accuracy at the last round", "accuracy_mean", 0.905, "min"),
        ("macro-F1 at the last round", "macro_f1_mean", 0.870, "min"),
        ("accuracy at 630 labels", "accuracy_630_mean", 0.897, "min"),
        ("labels to random's final accuracy, share of random's", "labels_share_of_random", 0.40, "max"),
    ),
    "product_group": (
        ("accuracy at the last round", "accuracy_mean", 0.80, "min"),
        ("macro-F1 at the last round", "macro_f1_mean", 0.72, "min"),
        ("accuracy at 230 labels", "accuracy_230_mean", 0.70, "min"),
        ("labels to random's final accuracy, share of random's", "labels_share_of_random", 0.40, "max"),
    ),
}


@dataclasses.dataclass(frozen=True)
class LabelSettings:
    """What one label-efficiency run does.

    Attributes
    ----------
    seeds : tuple of int, one repetition each (splits, tuning and random sampling)
    eval_size : int, docs held out per seed for evaluation
    seed_labels : int, random labels before the first query
    batch : int, labels per round
    rounds : int, query rounds after the seed labels (curve has rounds + 1 points)
    max_evals : int, hyperopt trials per tune (the DAG default is 128)
    strategies : tuple of str, arms (names of :data:`ARMS`: a query strategy or ``seed_recipe``)
    tasks : tuple of str
    workers : int, chains run concurrently
    corpus_limit : int, 0 = whole shipped corpus; else a stratified-free random subset
        of that many docs (smoke test only)
    mlflow : bool, log runs to MLflow
    """

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    eval_size: int = 2000
    seed_labels: int = 230
    batch: int = 100
    rounds: int = 10
    max_evals: int = 24
    strategies: tuple[str, ...] = DEFAULT_ARMS
    tasks: tuple[str, ...] = tuple(TASKS)
    workers: int = 2
    corpus_limit: int = 0
    mlflow: bool = True


QUICK = LabelSettings(seeds=(0,), rounds=3, max_evals=8)


def tuning_group(arm: str, arms: tuple[str, ...] = STRATEGIES) -> str:
    """The arm whose round 0 ``arm`` shares: the first of ``arms`` with the same features
    and tuning (round 0 is the same random labels, and tuning is deterministic)."""
    return next(other for other in arms if ARMS[other].tuning == ARMS[arm].tuning)


def _subset_corpus(limit: int, workdir: Path) -> Path:
    """A random subset of the shipped corpus as Parquet (smoke tests), written once."""
    path = workdir / f"corpus-{limit}.parquet"
    if not path.exists():
        frame = pd.read_csv(SHIPPED_CORPUS, dtype=str, keep_default_na=False)
        frame = frame.sample(n=min(limit, len(frame)), random_state=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path, index=False)
    return path


def tune_and_evaluate(X_lab, y_lab, X_eval, y_eval, cfg: LoopConfig, settings: LabelSettings) -> tuple:
    """One round's model work, run in a worker process (tune is CPU-bound Python +
    liblinear; threads would serialise on the GIL).

    Parameters: CSR matrices (n, num_features) and str arrays (n,); returns
    (model, best_params dict, tune seconds, metrics dict without ``per_class`` but with
    the tuning bound check ``c_at_bound`` and ``c_shifts``).
    """
    from al_tasks.ml.tune import tune

    quiet_warnings()
    result = tune(X_lab, y_lab, cfg, max_evals=settings.max_evals)
    metrics = evaluate(result.model, X_eval, y_eval, cfg.classes)
    metrics.pop("per_class")
    metrics.update(c_at_bound=result.c_at_bound, c_shifts=result.c_shifts)
    return result.model, result.best_params, result.seconds, metrics


def run(
    settings: LabelSettings = LabelSettings(),
    *,
    workdir: Path = DEFAULT_WORKDIR,
    results_dir: Path = RESULTS_DIR,
    readme: Path | None = None,
) -> dict:
    """Run the benchmark; write curves, summaries, plots; log to MLflow.

    Returns a dict with ``curves`` (DataFrame, one row per task/seed/strategy/round),
    ``summary`` (DataFrame, mean/sd per task/strategy/labels), ``final`` (DataFrame,
    one row per task/strategy), ``seconds`` (float) and ``files`` (list of Path).
    """
    from al_tasks.io.corpus import binary_labels, read_corpus
    from al_tasks.ml.features import featurize, load_features
    from al_tasks.ml.query import query

    quiet_warnings()
    unknown = sorted(set(settings.strategies) - set(ARMS))
    if unknown:
        raise ValueError(f"unknown arm(s) {unknown}; choose from {list(ARMS)}")
    started = time.perf_counter()
    workdir = Path(workdir)
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    corpus_path = _subset_corpus(settings.corpus_limit, workdir) if settings.corpus_limit else SHIPPED_CORPUS
    base = LoopConfig(
        workspace=str(workdir / "workspace"),
        task="label-efficiency",
        corpus_path=str(corpus_path),
        spark_master="local[2]",
        batch_size=settings.batch,
    )
    spark = bench_spark(base)

    # One feature set per feature setting in use, rows aligned to the first one's ids.
    kinds = list(dict.fromkeys(ARMS[arm].features for arm in settings.strategies))
    feature_sets, matrices, ids = {}, {}, None
    for kind in kinds:
        say(f"label efficiency: featurize {corpus_path.name} with {kind} features {FEATURES[kind]}")
        fs = featurize(base.with_overrides(FEATURES[kind]), spark)
        kind_ids, kind_X = load_features(fs)
        if ids is None:
            ids = kind_ids
        order = pd.Index(kind_ids).get_indexer(ids)
        if (order < 0).any() or len(kind_ids) != len(ids):
            raise RuntimeError(f"feature set {kind} holds other documents than {kinds[0]}")
        feature_sets[kind], matrices[kind] = fs, kind_X[order]
        say(
            f"  {kind}: {len(ids)} docs x {fs.num_features} features "
            f"(featurize {fs.seconds:.1f}s{', reused' if fs.reused else ''})"
        )
    docs = read_corpus(corpus_path, base).docs.set_index("id")
    truth = docs["label"].loc[ids].to_numpy(dtype=object)  # the simulated labeller
    position = pd.Index(ids)
    n = len(ids)
    if settings.eval_size + settings.seed_labels + settings.rounds * settings.batch > n:
        raise ValueError(f"corpus of {n} docs is too small for these settings")
    say(
        f"label efficiency: tasks {list(settings.tasks)}, seeds {list(settings.seeds)}, "
        f"arms {list(settings.strategies)}, {settings.rounds} rounds of {settings.batch}, "
        f"max_evals {settings.max_evals}, {settings.workers} workers"
    )

    def config_for(task: str, seed: int, arm: str) -> LoopConfig:
        # A binary task's classes become (positive_class, "rest") in LoopConfig itself.
        overrides = {**FEATURES[ARMS[arm].features], **ARMS[arm].overrides}
        return base.with_overrides({"task": f"le-{task}", "positive_class": TASKS[task], "seed": seed, **overrides})

    def labels_for(task: str, rows: np.ndarray) -> np.ndarray:
        y = truth[rows]
        return binary_labels(y, TASKS[task]) if TASKS[task] else y

    splits = {}
    for seed in settings.seeds:
        perm = np.random.default_rng(seed).permutation(n)
        splits[seed] = (
            perm[: settings.eval_size],
            perm[settings.eval_size : settings.eval_size + settings.seed_labels],
        )

    total_rounds = len(settings.tasks) * len(settings.seeds) * len(settings.strategies) * settings.rounds
    done = {"rounds": 0}
    lock = threading.Lock()
    loop_started = time.perf_counter()

    def round0(task: str, seed: int, arm: str):
        """Round 0 is the same for every arm that tunes alike (same labels, deterministic tune)."""
        eval_rows, seed_rows = splits[seed]
        cfg = config_for(task, seed, arm)
        X = matrices[ARMS[arm].features]
        out = tuners.submit(
            tune_and_evaluate,
            X[seed_rows],
            labels_for(task, seed_rows),
            X[eval_rows],
            labels_for(task, eval_rows),
            cfg,
            settings,
        ).result()
        say(
            f"  {task} seed {seed}: {len(seed_rows)} random seed labels -> accuracy {out[3]['accuracy']:.3f}, "
            f"macro-F1 {out[3]['macro_f1']:.3f} (tune {out[2]:.1f}s, round 0 of {arm}'s group)"
        )
        return out

    def chain(task: str, seed: int, strategy: str, first) -> list[dict]:
        eval_rows, labelled = splits[seed]
        labelled = labelled.copy()
        eval_ids = ids[eval_rows]
        y_eval = labels_for(task, eval_rows)
        cfg = config_for(task, seed, strategy)
        X, feature_set = matrices[ARMS[strategy].features], feature_sets[ARMS[strategy].features]
        model, best, tune_seconds, metrics = first.result()
        records = []
        for rnd in range(settings.rounds + 1):
            if rnd > 0:
                model, best, tune_seconds, metrics = tuners.submit(
                    tune_and_evaluate,
                    X[labelled],
                    labels_for(task, labelled),
                    X[eval_rows],
                    y_eval,
                    cfg,
                    settings,
                ).result()
            record = {
                "task": task,
                "seed": seed,
                "strategy": strategy,
                "round": rnd,
                "n_labels": len(labelled),
                "accuracy": metrics["accuracy"],
                "macro_f1": metrics["macro_f1"],
                "log_loss": metrics["log_loss"],
                "C": best["C"],
                "penalty": best["penalty"],
                "class_weight": str(best["class_weight"]),
                "c_at_bound": metrics["c_at_bound"],
                "c_shifts": metrics["c_shifts"],
                "tune_seconds": tune_seconds,
                "query_seconds": np.nan,
            }
            if rnd < settings.rounds:
                labelled_ids = ids[labelled]
                picked = query(
                    feature_set,
                    model,
                    cfg,
                    exclude_ids=np.concatenate([eval_ids, labelled_ids]),
                    labelled_ids=labelled_ids,
                    round_number=rnd,
                    spark=spark,
                )
                rows = position.get_indexer(picked.items["id"].to_numpy())
                # The pool never contains evaluation or already-labelled docs.
                assert len(rows) == settings.batch and (rows >= 0).all(), "query returned a short or unknown batch"
                assert not np.isin(rows, np.concatenate([eval_rows, labelled])).any(), "query re-picked a doc"
                labelled = np.concatenate([labelled, rows])
                record["query_seconds"] = picked.seconds
            records.append(record)
            if rnd > 0:
                with lock:
                    done["rounds"] += 1
                    elapsed = time.perf_counter() - loop_started
                    eta = elapsed / done["rounds"] * (total_rounds - done["rounds"])
                    say(
                        f"  [{done['rounds']}/{total_rounds}, ETA {eta / 60:.1f} min] {task} seed {seed} "
                        f"{strategy:>12}: {record['n_labels']} labels, accuracy {record['accuracy']:.3f}, "
                        f"macro-F1 {record['macro_f1']:.3f} (tune {tune_seconds:.1f}s, "
                        f"query {records[-2]['query_seconds']:.1f}s)"
                    )
        return records

    records: list[dict] = []
    # Chains are threads (they mostly wait); their tune + evaluate runs in a pool of
    # worker processes ("spawn": forking a process that hosts a JVM gateway is unsafe).
    # Spark queries of one chain overlap tuning of the others.
    tuners = cf.ProcessPoolExecutor(max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn"))
    with tuners, cf.ThreadPoolExecutor(max_workers=settings.workers + 1, thread_name_prefix="chain") as pool:
        # Round-0 jobs go first: the queue is FIFO, so no chain waits on an unstarted job.
        groups = {tuning_group(arm, settings.strategies) for arm in settings.strategies}
        firsts = {
            (t, s, g): pool.submit(round0, t, s, g) for s in settings.seeds for t in settings.tasks for g in groups
        }
        chains = [
            pool.submit(chain, t, s, st, firsts[t, s, tuning_group(st, settings.strategies)])
            for s in settings.seeds
            for t in settings.tasks
            for st in settings.strategies
        ]
        for future in chains:
            records.extend(future.result())
    loop_seconds = time.perf_counter() - loop_started

    curves = pd.DataFrame(records).sort_values(["task", "strategy", "seed", "round"]).reset_index(drop=True)
    summary = summarise(curves)
    final = final_table(curves, summary)
    seconds = time.perf_counter() - started
    meta = {
        "settings": dataclasses.asdict(settings),
        "corpus": str(Path(corpus_path).relative_to(REPO_ROOT))
        if Path(corpus_path).is_relative_to(REPO_ROOT)
        else str(corpus_path),
        "n_docs": n,
        "features": {kind: FEATURES[kind] for kind in kinds},
        "arms": {arm: dataclasses.asdict(ARMS[arm]) for arm in settings.strategies},
        "num_features": {kind: fs.num_features for kind, fs in feature_sets.items()},
        "featurize_seconds": {kind: fs.seconds for kind, fs in feature_sets.items()},
        "loop_seconds": loop_seconds,
        "total_seconds": seconds,
        "tune_seconds_sum": float(curves.loc[curves["round"] > 0, "tune_seconds"].sum()),
        "query_seconds_sum": float(curves["query_seconds"].sum()),
        "reference": REFERENCE,
        "machine": machine_info(),
    }
    files = write_outputs(curves, summary, final, meta, results_dir, readme)
    if settings.mlflow:
        log_mlflow(base, settings, summary, final, meta, files)
    say(f"label efficiency: done in {seconds / 60:.1f} min; results in {results_dir}")
    return {"curves": curves, "summary": summary, "final": final, "seconds": seconds, "files": files, "meta": meta}


# ----------------------------------------------------------------------------- summaries
def summarise(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd (ddof=1; 0 for one seed) over seeds per task, strategy and label count."""
    grouped = curves.groupby(["task", "strategy", "n_labels"], sort=True)
    out = grouped.agg(
        accuracy_mean=("accuracy", "mean"),
        accuracy_sd=("accuracy", "std"),
        macro_f1_mean=("macro_f1", "mean"),
        macro_f1_sd=("macro_f1", "std"),
        n_seeds=("seed", "nunique"),
    ).reset_index()
    return out.fillna({"accuracy_sd": 0.0, "macro_f1_sd": 0.0})


def labels_to_reach(n_labels: np.ndarray, values: np.ndarray, target: float) -> float:
    """Labels where a learning curve first reaches ``target``, linearly interpolated
    between the two rounds around the crossing; NaN when it never does."""
    n_labels, values = np.asarray(n_labels, float), np.asarray(values, float)
    hits = np.flatnonzero(values >= target)
    if not len(hits):
        return math.nan
    i = hits[0]
    if i == 0:
        return float(n_labels[0])
    x0, x1, v0, v1 = n_labels[i - 1], n_labels[i], values[i - 1], values[i]
    return float(x0 + (target - v0) / (v1 - v0) * (x1 - x0))


def normalised_auc(n_labels: np.ndarray, values: np.ndarray) -> float:
    """Area under a learning curve divided by its label range: the mean metric over the
    run (1.0 = perfect from the first label)."""
    n_labels, values = np.asarray(n_labels, float), np.asarray(values, float)
    return float(np.trapezoid(values, n_labels) / (n_labels[-1] - n_labels[0]))


def auc_per_seed(part: pd.DataFrame) -> pd.DataFrame:
    """Normalised area under the accuracy (``acc``) and macro-F1 (``f1``) curves, one row per seed."""
    return part.groupby("seed").apply(
        lambda g: pd.Series(
            {
                "acc": normalised_auc(g["n_labels"], g["accuracy"]),
                "f1": normalised_auc(g["n_labels"], g["macro_f1"]),
            }
        ),
        include_groups=False,
    )


def bound_check(part: pd.DataFrame) -> dict:
    """The tuning bound check over an arm's tuned rounds (every seed and round): how many
    ended with the best C at a bound of the range searched, and how many re-searched."""
    at_bound = part["c_at_bound"] != "no" if "c_at_bound" in part else pd.Series(False, index=part.index)
    shifted = part["c_shifts"] > 0 if "c_shifts" in part else pd.Series(False, index=part.index)
    return {
        "tuned_rounds": int(len(part)),
        "c_at_bound_rounds": int(at_bound.sum()),
        "c_at_bound_share": float(at_bound.mean()) if len(part) else math.nan,
        "c_shifted_rounds": int(shifted.sum()),
    }


def final_table(curves: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per task and arm: metrics at the last round (mean, sd), at 630 labels,
    labels needed to reach random's mean accuracy (and macro-F1) at the last round (also
    as a share of random's labels), the normalised area under the curves (mean, sd over
    seeds) and the tuning bound check (:func:`bound_check`)."""
    rows = []
    for (task, strategy), part in summary.groupby(["task", "strategy"], sort=False):
        part = part.sort_values("n_labels")
        last = part.iloc[-1]
        rand = summary[(summary["task"] == task) & (summary["strategy"] == "random")].sort_values("n_labels")
        per_seed = curves[(curves["task"] == task) & (curves["strategy"] == strategy)]
        aucs = auc_per_seed(per_seed)
        at = part.set_index("n_labels")
        row = {
            "task": task,
            "strategy": strategy,
            "n_labels": int(last["n_labels"]),
            "n_seeds": int(last["n_seeds"]),
            "accuracy_mean": last["accuracy_mean"],
            "accuracy_sd": last["accuracy_sd"],
            "macro_f1_mean": last["macro_f1_mean"],
            "macro_f1_sd": last["macro_f1_sd"],
            "accuracy_230_mean": at["accuracy_mean"].get(230, math.nan),
            "accuracy_630_mean": at["accuracy_mean"].get(630, math.nan),
            "accuracy_630_sd": at["accuracy_sd"].get(630, math.nan),
            "auc_accuracy_mean": aucs["acc"].mean(),
            "auc_accuracy_sd": aucs["acc"].std(ddof=1) if len(aucs) > 1 else 0.0,
            "auc_macro_f1_mean": aucs["f1"].mean(),
            "auc_macro_f1_sd": aucs["f1"].std(ddof=1) if len(aucs) > 1 else 0.0,
            "labels_to_random_accuracy": math.nan,
            "labels_to_random_macro_f1": math.nan,
            "labels_share_of_random": math.nan,
            **bound_check(per_seed),
        }
        if len(rand):
            row["random_final_accuracy"] = rand["accuracy_mean"].iloc[-1]
            row["labels_to_random_accuracy"] = labels_to_reach(
                part["n_labels"], part["accuracy_mean"], rand["accuracy_mean"].iloc[-1]
            )
            row["labels_to_random_macro_f1"] = labels_to_reach(
                part["n_labels"], part["macro_f1_mean"], rand["macro_f1_mean"].iloc[-1]
            )
            row["labels_share_of_random"] = row["labels_to_random_accuracy"] / float(rand["n_labels"].iloc[-1])
        rows.append(row)
    order = {s: i for i, s in enumerate(STRATEGIES)}
    table = pd.DataFrame(rows)
    return table.sort_values(
        ["task", "strategy"], key=lambda c: c.map(order) if c.name == "strategy" else c
    ).reset_index(drop=True)


def _features_text(features: dict) -> str:
    parts = ["sublinear TF" if features.get("sublinear_tf") else "raw TF"]
    parts.append("words 1-2" if features.get("ngram_max", 1) > 1 else "words")
    if features.get("lsa_components"):
        parts.append(f"+ {features['lsa_components']}-dim LSA")
    return "TF-IDF (" + ", ".join(parts[:2]) + ")" + (" " + parts[2] if len(parts) > 2 else "")


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _labels(value: float) -> str:
    return "not reached" if math.isnan(value) else f"{value:,.0f}"


def target_lines(final: pd.DataFrame, task: str) -> str:
    """Issue 12's targets of ``task``: the best arm (random excluded) on each, met or not."""
    lines = []
    arms = final[(final["task"] == task) & ~final["strategy"].isin(BASELINES)]
    for what, column, bound, kind in TARGETS.get(task, ()):
        values = arms[["strategy", column]].dropna()
        if values.empty:
            lines.append(f"* {what} {'≥' if kind == 'min' else '≤'} {bound}: not measured in this run")
            continue
        best = values.loc[values[column].idxmax() if kind == "min" else values[column].idxmin()]
        met = best[column] >= bound if kind == "min" else best[column] <= bound
        shown = f"{best[column]:.0%}" if column == "labels_share_of_random" else f"{best[column]:.3f}"
        sign = "≥" if kind == "min" else "≤"
        lines.append(f"* {what} {sign} {bound}: best {best['strategy']} {shown}, **{'met' if met else 'missed'}**")
    return "\n".join(lines) + "\n" if lines else ""


def markdown(final: pd.DataFrame, meta: dict) -> str:
    """The README section: one table per task."""
    s = meta["settings"]
    out = [
        f"{len(s['seeds'])} seeds; fixed evaluation set of {s['eval_size']:,} docs per seed; "
        f"{s['seed_labels']} random seed labels + {s['rounds']} rounds of {s['batch']}; tune max_evals "
        f"{s['max_evals']}; run took {meta['total_seconds'] / 60:.1f} min "
        f"(tune {meta['tune_seconds_sum'] / 60:.1f} min and query {meta['query_seconds_sum'] / 60:.1f} min "
        f"summed over {s['workers']} workers). Mean ± sd over seeds; AUC = area under the learning curve "
        "over its label range, divided by that range (the mean metric over the run); labels to random's "
        "final accuracy in parentheses as a share of random's labels; C at a bound = tuned rounds (all "
        "seeds, round 0 included) whose best C ended at a bound of the range searched "
        "(al_tasks.ml.tune), and how many re-searched a shifted range. Features: "
        + "; ".join(f"`{kind}` = {_features_text(FEATURES[kind])}" for kind in meta.get("features", FEATURES))
        + ". Arms without a suffix use `lsa`; `seed_recipe` is the seed recipe's settings (`tfidf`, margin, "
        "C ≤ e¹, no class weights, no re-search).\n"
    ]
    for task in final["task"].unique():
        part = final[final["task"] == task]
        ref = REFERENCE.get(task, {})
        n_last = int(part["n_labels"].iloc[0])
        rows = []
        for _, r in part.iterrows():
            rows.append(
                {
                    "strategy": r["strategy"],
                    f"accuracy @ {n_last:,}": _pm(r["accuracy_mean"], r["accuracy_sd"]),
                    f"macro-F1 @ {n_last:,}": _pm(r["macro_f1_mean"], r["macro_f1_sd"]),
                    "accuracy @ 630": ""
                    if math.isnan(r["accuracy_630_mean"])
                    else _pm(r["accuracy_630_mean"], r["accuracy_630_sd"]),
                    "labels to random's final accuracy": _labels(r["labels_to_random_accuracy"])
                    + ("" if math.isnan(r["labels_share_of_random"]) else f" ({r['labels_share_of_random']:.0%})"),
                    "labels to random's final macro-F1": _labels(r["labels_to_random_macro_f1"]),
                    "AUC accuracy": _pm(r["auc_accuracy_mean"], r["auc_accuracy_sd"]),
                    "AUC macro-F1": _pm(r["auc_macro_f1_mean"], r["auc_macro_f1_sd"]),
                    "C at a bound": f"{r['c_at_bound_rounds']} of {r['tuned_rounds']} rounds"
                    + (f" ({r['c_shifted_rounds']} re-searched)" if r["c_shifted_rounds"] else ""),
                }
            )
        target = f"aim: accuracy ≥ {ref.get('target_accuracy')}" + (
            f", macro-F1 ≥ {ref['target_macro_f1']}" if ref.get("target_macro_f1") else ""
        )
        seed_ref = (
            f"seed recipe / small-text: ~{ref.get('seed_recipe_accuracy')} accuracy at "
            f"{ref.get('seed_recipe_labels'):,} labels"
            if ref
            else ""
        )
        out.append(f"\n**{task}** ({target}; {seed_ref})\n\n")
        out.append(markdown_table(rows))
        targets = target_lines(final, task)
        if targets:
            out.append(f"\nTargets (issue 12):\n\n{targets}")
        out.append(f"\n![{task}](results/label_efficiency_{task}.png)\n")
    return "".join(out)


def summary_markdown(final: pd.DataFrame, meta: dict) -> str:
    """The project README's results table: every arm on both tasks, at the first and the
    last round, and the labels it needs to reach random's last-round accuracy."""
    s = meta["settings"]
    first, last = s["seed_labels"], s["seed_labels"] + s["rounds"] * s["batch"]
    rows = []
    for arm in dict.fromkeys(final["strategy"]):
        row = {"arm": f"`{arm}`", "features": f"`{ARMS[arm].features}`" if arm in ARMS else ""}
        for task, short in (("debt_collection", "debt_collection"), ("product_group", "Product group")):
            r = final[(final["task"] == task) & (final["strategy"] == arm)]
            if r.empty:
                continue
            r = r.iloc[0]
            row[f"{short}: accuracy / macro-F1 @ {last:,}"] = (
                f"{r['accuracy_mean']:.3f} ± {r['accuracy_sd']:.3f} / {r['macro_f1_mean']:.3f}"
            )
            row[f"{short}: accuracy @ {first}"] = f"{r['accuracy_230_mean']:.3f}"
            share = r["labels_share_of_random"]
            row[f"{short}: labels to random's @ {last:,}"] = (
                "not reached" if math.isnan(share) else f"{r['labels_to_random_accuracy']:,.0f} ({share:.0%})"
            )
        rows.append(row)
    return (
        f"{len(s['seeds'])} seeds, mean ± sd; {s['max_evals']} tuning trials a round; run of "
        f"{meta['total_seconds'] / 60:.0f} min on {meta['machine'].get('nproc', '?')} cores "
        "(bench/README.md has every column, the targets and the plots).\n\n" + markdown_table(rows)
    )


#: Line styles of the baselines in the plots.
BASELINE_STYLE = {
    "random": {"color": "black", "linestyle": "--"},
    "random_tfidf": {"color": "dimgrey", "linestyle": "-."},
    "seed_recipe": {"color": "grey", "linestyle": ":"},
}


def plot(summary: pd.DataFrame, task: str, path: Path) -> None:
    """Accuracy and macro-F1 vs labels, mean ± sd bands, one line per strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = summary[summary["task"] == task]
    ref = REFERENCE.get(task, {})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    # Strategies with identical curves (uncertainty, margin and entropy rank a binary
    # task's pool the same way) share one line, named after all of them.
    curves, names = {}, {}
    for strategy in STRATEGIES:
        cur = part[part["strategy"] == strategy].sort_values("n_labels")
        if cur.empty:
            continue
        key = tuple(np.round(cur[["accuracy_mean", "macro_f1_mean"]].to_numpy().ravel(), 12))
        curves.setdefault(key, cur)
        names.setdefault(key, []).append(strategy)
    for ax, metric, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "macro_f1", "macro-F1")):
        for key, cur in curves.items():
            x, m, sd = cur["n_labels"], cur[f"{metric}_mean"], cur[f"{metric}_sd"]
            style = BASELINE_STYLE.get(names[key][0], {}) if len(names[key]) == 1 else {}
            (line,) = ax.plot(x, m, marker="o", markersize=3, label=" = ".join(names[key]), **style)
            ax.fill_between(x, m - sd, m + sd, alpha=0.15, color=line.get_color())
        target = ref.get(f"target_{metric}")
        if target:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"aim {target}")
        seed_value = ref.get(f"seed_recipe_{metric}")
        if seed_value:
            ax.plot(
                [ref["seed_recipe_labels"]],
                [seed_value],
                marker="*",
                markersize=12,
                color="crimson",
                linestyle="none",
                label="seed recipe / small-text",
            )
        ax.set_xlabel("labels")
        ax.set_ylabel(f"{label} on fixed evaluation set")
        ax.grid(alpha=0.3)
    n_seeds = int(part["n_seeds"].max()) if len(part) else 0
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Label efficiency, {task} (mean ± sd over {n_seeds} seeds)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(curves, summary, final, meta, results_dir: Path, readme: Path | None) -> list[Path]:
    files = []
    for name, frame in (("curves", curves), ("summary", summary), ("final", final)):
        path = results_dir / f"label_efficiency_{name}.csv"
        frame.to_csv(path, index=False, float_format="%.6g")
        files.append(path)
    for task in summary["task"].unique():
        path = results_dir / f"label_efficiency_{task}.png"
        plot(summary, task, path)
        files.append(path)
    path = results_dir / "label_efficiency.json"
    write_json(path, meta)
    files.append(path)
    text = markdown(final, meta)
    path = results_dir / "label_efficiency.md"
    path.write_text(text)
    files.append(path)
    if readme is not None:
        replace_section(readme, "label-efficiency", text)
        replace_section(REPO_ROOT / "README.md", "label-summary", summary_markdown(final, meta))
    return files


def rebuild(results_dir: Path = RESULTS_DIR, readme: Path | None = None) -> pd.DataFrame:
    """Re-derive summaries, tables, plots and README sections from
    ``label_efficiency_curves.csv`` and ``label_efficiency.json`` (no training)."""
    import json

    results_dir = Path(results_dir)
    curves = pd.read_csv(results_dir / "label_efficiency_curves.csv", keep_default_na=False, na_values=[""])
    meta = json.loads((results_dir / "label_efficiency.json").read_text())
    summary = summarise(curves)
    final = final_table(curves, summary)
    write_outputs(curves, summary, final, meta, results_dir, readme)
    return final


def log_mlflow(base: LoopConfig, settings: LabelSettings, summary, final, meta, files: list[Path]) -> None:
    """One MLflow run per task in experiment ``benchmarks/label-efficiency``: mean curves
    as metrics ``<strategy>/accuracy`` etc. with step = labels, final numbers, artifacts."""
    import mlflow

    from al_tasks.tracking import experiment_id, tracking_uri

    # Through al_tasks.tracking: artifacts in the workspace, no MLFLOW_* env leak.
    mlflow.set_experiment(experiment_id=experiment_id(base, "benchmarks/label-efficiency"))
    for task in summary["task"].unique():
        with mlflow.start_run(run_name=task):
            mlflow.log_params({k: v for k, v in dataclasses.asdict(settings).items() if k not in ("tasks",)})
            mlflow.log_param("task", task)
            mlflow.log_param("n_docs", meta["n_docs"])
            part = summary[summary["task"] == task]
            for _, r in part.iterrows():
                step = int(r["n_labels"])
                mlflow.log_metrics(
                    {
                        f"{r['strategy']}/accuracy": r["accuracy_mean"],
                        f"{r['strategy']}/accuracy_sd": r["accuracy_sd"],
                        f"{r['strategy']}/macro_f1": r["macro_f1_mean"],
                        f"{r['strategy']}/macro_f1_sd": r["macro_f1_sd"],
                    },
                    step=step,
                )
            for _, r in final[final["task"] == task].iterrows():
                values = {
                    f"{r['strategy']}/final_accuracy": r["accuracy_mean"],
                    f"{r['strategy']}/final_macro_f1": r["macro_f1_mean"],
                    f"{r['strategy']}/auc_accuracy": r["auc_accuracy_mean"],
                    f"{r['strategy']}/auc_macro_f1": r["auc_macro_f1_mean"],
                    f"{r['strategy']}/labels_to_random_accuracy": r["labels_to_random_accuracy"],
                    f"{r['strategy']}/tuning_c_at_bound_share": r["c_at_bound_share"],
                }
                mlflow.log_metrics({k: float(v) for k, v in values.items() if not math.isnan(float(v))})
            for path in files:
                if path.suffix in (".csv", ".json", ".md") or path.name == f"label_efficiency_{task}.png":
                    mlflow.log_artifact(str(path))
    say(f"label efficiency: logged to MLflow {tracking_uri(base)} (experiment benchmarks/label-efficiency)")
