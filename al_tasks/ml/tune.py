"""Tune: hyperopt TPE over the classifier's settings, then refit on all labels.

Search space (as in the seed recipe, plus class weights)::

    penalty       in {l1, l2}
    C             ~ loguniform(log_c_low, log_c_high)      default e^-6 .. e^1
    class_weight  in {None, balanced}                      helps rare classes (macro-F1)

Objective: log loss on a validation split stratified by class; accuracy and macro-F1
are recorded per trial. The best setting is refitted on train + validation.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, space_eval, tpe

from al_tasks.config import LoopConfig
from al_tasks.ml.evaluate import evaluate
from al_tasks.ml.model import TextClassifier
from al_tasks.ml.splits import stratified_split

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TuneResult:
    """Outcome of :func:`tune`.

    Attributes
    ----------
    model : TextClassifier refitted on all labels with ``best_params``
    best_params : dict (C, penalty, class_weight)
    best_loss : float, validation log loss of the best trial
    trials : list of dict (number, C, penalty, class_weight, log_loss, accuracy,
        macro_f1, seconds), one per evaluation, in order
    n_train, n_validation : int
    seconds : float
    """

    model: TextClassifier
    best_params: dict
    best_loss: float
    trials: list[dict]
    n_train: int
    n_validation: int
    seconds: float


def search_space(config: LoopConfig) -> dict:
    """Hyperopt search space of the classifier's settings (see the module docstring)."""
    return {
        "penalty": hp.choice("penalty", ["l1", "l2"]),
        "C": hp.loguniform("C", config.log_c_low, config.log_c_high),
        "class_weight": hp.choice("class_weight", [None, "balanced"]),
    }


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


def tune(X, y, config: LoopConfig, *, classes=None, max_evals: int | None = None) -> TuneResult:
    """Search classifier settings on (X, y) and refit the best on all of it.

    Parameters
    ----------
    X : CSR matrix, shape (n_labelled, n_features)
    y : array of str, shape (n_labelled,)
    config : LoopConfig (seed, validation_fraction, search bounds, trials backend)
    classes : the task's classes (default ``config.classes``, else those in ``y``)
    max_evals : overrides ``config.max_evals``

    Returns
    -------
    TuneResult
    """
    started = time.perf_counter()
    y = np.asarray(y, dtype=object)
    classes = list(classes or config.classes or sorted(set(y)))
    train, validation = stratified_split(y, config.validation_fraction, config.seed)
    objective = make_objective(X[train], y[train], X[validation], y[validation], classes, config.seed)
    space = search_space(config)
    trials = trials_backend(config)
    best = fmin(
        objective,
        space,
        algo=tpe.suggest,
        max_evals=int(max_evals or config.max_evals),
        trials=trials,
        rstate=np.random.default_rng(config.seed),
        show_progressbar=False,
    )
    best_params = space_eval(space, best)
    records = trial_records(trials)
    best_loss = min(r["log_loss"] for r in records)
    model = TextClassifier(classes=classes, random_state=config.seed, **best_params).fit(X, y)
    seconds = time.perf_counter() - started
    log.info(
        "tune: %s trials in %.1fs; best %s (validation log loss %.4f, %s train / %s validation)",
        len(records),
        seconds,
        best_params,
        best_loss,
        len(train),
        len(validation),
    )
    return TuneResult(
        model=model,
        best_params=best_params,
        best_loss=best_loss,
        trials=records,
        n_train=len(train),
        n_validation=len(validation),
        seconds=seconds,
    )
