"""Tune: hyperopt TPE over the classifier's settings, then refit on all labels.

Search space (as in the seed recipe, a wider C range, plus class weights)::

    penalty       in {l1, l2}
    C             ~ loguniform(log_c_low, log_c_high)      default e^-6 .. e^9
    class_weight  in {None, balanced}                      helps rare classes (macro-F1);
                                                           {None} with search_class_weight=False

Objective: log loss on a validation split stratified by class; accuracy and macro-F1
are recorded per trial. The best setting is refitted on train + validation.

**C bound check.** A best C at the edge of its range means the range, not the data,
chose it (with the seed recipe's e^1 bound that was two rounds in three). The best C is
*at a bound* when its log lies within :data:`C_BOUND_SHARE` of the range's width of the
lower or upper end of the range searched. Then, up to ``c_bound_shifts`` times, the search runs again
(``max_evals // 2`` trials, fresh TPE history) in the range shifted by half its width
past that bound, and the best trial of all searches wins. The check is finally made
against the union of the ranges searched, so a C that the shifted search could not beat
is inside, not at a bound. The result says which bound (``c_at_bound``: ``no``, ``low``,
``high``), the range and the shifts; each round logs them to MLflow (metric
``tuning_c_at_bound``, tag ``al.tuning_c_at_bound``) and to its summary. The penalty
(l1/l2) is a choice between two values with no bound; C is its strength.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe

from al_tasks.config import LoopConfig
from al_tasks.ml.evaluate import evaluate
from al_tasks.ml.model import TextClassifier
from al_tasks.ml.splits import stratified_split

log = logging.getLogger(__name__)

#: The best C is "at a bound" when its log lies in this share of the log range next to the
#: bound (default range e^-6 .. e^9: C >= e^7.5 or C <= e^-4.5). A share, not a fixed
#: distance, because hyperopt's first 20 trials are random draws: a zone of a tenth of the
#: range holds at least one of them with probability 1 - 0.9^20 = 0.88.
C_BOUND_SHARE = 0.1


@dataclasses.dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    model : TextClassifier refitted on all labels with ``best_params``
    best_params : dict (C, penalty, class_weight)
    best_loss : float, validation log loss of the best trial
    trials : list of dict (number, search, C, penalty, class_weight, log_loss, accuracy,
        macro_f1, seconds), one per evaluation, in order; ``search`` counts the C ranges
    n_train, n_validation : int
    seconds : float
    log_c_range : (low, high), the union of the log(C) ranges searched
    c_at_bound : ``"no"``, ``"low"`` or ``"high"``: where the best C sits in ``log_c_range``
    c_shifts : int, re-searches in a shifted range
    """

    model: TextClassifier
    best_params: dict
    best_loss: float
    trials: list[dict]
    n_train: int
    n_validation: int
    seconds: float
    log_c_range: tuple[float, float] = (-6.0, 9.0)
    c_at_bound: str = "no"
    c_shifts: int = 0


def search_space(config: LoopConfig, log_c_range: tuple[float, float] | None = None) -> dict:
    """Hyperopt search space of the classifier's settings (see the module docstring).

    ``log_c_range``: (low, high) of log(C), default ``config.log_c_low, config.log_c_high``.
    """
    low, high = log_c_range or (config.log_c_low, config.log_c_high)
    return {
        "penalty": hp.choice("penalty", ["l1", "l2"]),
        "C": hp.loguniform("C", low, high),
        "class_weight": hp.choice("class_weight", [None, "balanced"] if config.search_class_weight else [None]),
    }


def c_at_bound(c: float, log_c_range: tuple[float, float], share: float = C_BOUND_SHARE) -> str:
    """``"low"`` or ``"high"`` when log(c) is within ``share`` of the width of
    ``log_c_range`` from that end of it, else ``"no"``.
    """
    low, high = log_c_range
    log_c = float(np.log(c))
    tolerance = share * (high - low)
    if log_c >= high - tolerance:
        return "high"
    if log_c <= low + tolerance:
        return "low"
    return "no"


def shifted_range(log_c_range: tuple[float, float], side: str) -> tuple[float, float]:
    """``log_c_range`` moved by half its width past its ``side`` (``"low"``/``"high"``) bound."""
    low, high = log_c_range
    step = (high - low) / 2 * (1 if side == "high" else -1)
    return low + step, high + step


def make_objective(X_train, y_train, X_val, y_val, classes: list[str], seed: int):
    """Hyperopt objective: fit on the training part, log loss on the validation part.

    Each result carries a ``record`` (the params, log_loss, accuracy, macro_f1, seconds).
    """

    def objective(params: dict) -> dict:
        started = time.perf_counter()
        model = TextClassifier(classes=classes, random_state=seed, **params).fit(X_train, y_train)
        metrics = evaluate(model, X_val, y_val, classes)
        record = {
            **params,
            "log_loss": metrics["log_loss"],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "seconds": time.perf_counter() - started,
        }
        return {"loss": metrics["log_loss"], "status": STATUS_OK, "record": record}

    return objective


def trials_backend(config: LoopConfig):
    """Hyperopt ``Trials`` in this process, or ``SparkTrials`` on ``config.spark_master``."""
    if not config.use_spark_trials:
        return Trials()
    from hyperopt import SparkTrials

    from al_tasks.spark import spark_session

    spark_session(config)  # SparkTrials runs on the active session
    return SparkTrials(parallelism=config.spark_trials_parallelism)


def trial_records(trials) -> list[dict]:
    """The ``record`` of every finished trial, numbered in the order they ran."""
    return [
        {"number": number, **trial["result"]["record"]}
        for number, trial in enumerate(trials.trials)
        if "record" in trial.get("result", {})
    ]


def run_search(objective, space: dict, config: LoopConfig, max_evals: int, search: int) -> list[dict]:
    """One hyperopt TPE search; the records of its trials, tagged with ``search``."""
    trials = trials_backend(config)
    fmin(
        objective,
        space,
        algo=tpe.suggest,
        max_evals=int(max_evals),
        trials=trials,
        rstate=np.random.default_rng(config.seed + search),
        show_progressbar=False,
    )
    return [{**record, "search": search} for record in trial_records(trials)]


def search_with_c_check(objective, config: LoopConfig, max_evals: int) -> tuple[list[dict], tuple, str, int]:
    """Search, then re-search shifted C ranges while the best C sits at a bound (see the
    module docstring). Returns (trial records, union of ranges, c_at_bound, shifts).
    """
    log_c_range = (config.log_c_low, config.log_c_high)
    union = log_c_range
    records = run_search(objective, search_space(config, log_c_range), config, max_evals, 0)
    shifts = 0
    while True:
        best = min(records, key=lambda r: r["log_loss"])
        side = c_at_bound(best["C"], union)
        if side == "no" or shifts >= config.c_bound_shifts:
            break
        shifts += 1
        log_c_range = shifted_range(log_c_range, side)
        union = (min(union[0], log_c_range[0]), max(union[1], log_c_range[1]))
        log.info(
            "tune: best C %.3g is at the %s bound; searching log(C) in %.2f .. %.2f", best["C"], side, *log_c_range
        )
        more = run_search(objective, search_space(config, log_c_range), config, max(1, max_evals // 2), shifts)
        records += [{**r, "number": r["number"] + len(records)} for r in more]
    return records, union, side, shifts


def tune(X, y, config: LoopConfig, *, classes=None, max_evals: int | None = None) -> TuneResult:
    """Search classifier settings on (X, y) and refit the best on all of it.

    Parameters
    ----------
    X : CSR matrix, shape (n_labelled, n_features)
    y : array of str, shape (n_labelled,)
    config : LoopConfig (seed, validation_fraction, search bounds and shifts, trials backend)
    classes : the task's classes (default ``config.classes``, else those in ``y``)
    max_evals : overrides ``config.max_evals`` (of the first search)

    Returns
    -------
    TuneResult
    """
    started = time.perf_counter()
    y = np.asarray(y, dtype=object)
    classes = list(classes or config.classes or sorted(set(y)))
    train, validation = stratified_split(y, config.validation_fraction, config.seed)
    objective = make_objective(X[train], y[train], X[validation], y[validation], classes, config.seed)
    records, log_c_range, side, shifts = search_with_c_check(objective, config, int(max_evals or config.max_evals))
    best = min(records, key=lambda r: r["log_loss"])
    best_params = {k: best[k] for k in ("C", "penalty", "class_weight")}
    model = TextClassifier(classes=classes, random_state=config.seed, **best_params).fit(X, y)
    seconds = time.perf_counter() - started
    log.info(
        "tune: %s trials in %.1fs; best %s (validation log loss %.4f, %s train / %s validation)",
        len(records),
        seconds,
        best_params,
        best["log_loss"],
        len(train),
        len(validation),
    )
    if side != "no":
        log.warning(
            "tune: best C %.3g is at the %s bound of log(C) %.2f .. %.2f after %s shift(s)",
            best["C"],
            side,
            *log_c_range,
            shifts,
        )
    return TuneResult(
        model=model,
        best_params=best_params,
        best_loss=best["log_loss"],
        trials=records,
        n_train=len(train),
        n_validation=len(validation),
        seconds=seconds,
        log_c_range=(float(log_c_range[0]), float(log_c_range[1])),
        c_at_bound=side,
        c_shifts=shifts,
    )
