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
import time

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, hp, space_eval, tpe

from al_tasks.config import LoopConfig
from al_tasks.evaluate import evaluate
from al_tasks.model import TextClassifier


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
    return {
        "penalty": hp.choice("penalty", ["l1", "l2"]),
        "C": hp.loguniform("C", config.log_c_low, config.log_c_high),
        "class_weight": hp.choice("class_weight", [None, "balanced"]),
    }


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) with ``fraction`` of each class in validation.

    A class with a single example goes to training (a model cannot learn a class it
    never saw; validation can live without it). Every class with two or more examples
    keeps at least one in each part.
    """
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=object)
    train, validation = [], []
    for cls in sorted(set(y)):
        members = rng.permutation(np.flatnonzero(y == cls))
        n_val = int(round(fraction * len(members)))
        n_val = min(max(n_val, 1 if len(members) >= 2 else 0), len(members) - 1)
        validation.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train, dtype=np.int64)), np.sort(np.asarray(validation, dtype=np.int64))


def tune(X, y, config: LoopConfig, *, classes=None, max_evals: int | None = None, log=print) -> TuneResult:
    """Search classifier settings on (X, y) and refit the best on all of it.

    Parameters
    ----------
    X : CSR matrix, shape (n_labelled, n_features)
    y : array of str, shape (n_labelled,)
    config : LoopConfig (seed, validation_fraction, search bounds, trials backend)
    classes : the task's classes (default ``config.classes``, else those in ``y``)
    max_evals : overrides ``config.max_evals``
    """
    started = time.perf_counter()
    y = np.asarray(y, dtype=object)
    classes = list(classes or config.classes or sorted(set(y)))
    max_evals = int(max_evals or config.max_evals)
    train, validation = stratified_split(y, config.validation_fraction, config.seed)
    X_train, y_train, X_val, y_val = X[train], y[train], X[validation], y[validation]
    records: list[dict] = []

    def objective(params: dict) -> dict:
        t0 = time.perf_counter()
        model = TextClassifier(classes=classes, random_state=config.seed, **params).fit(X_train, y_train)
        metrics = evaluate(model, X_val, y_val, classes)
        record = {
            **params,
            "log_loss": metrics["log_loss"],
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
            "seconds": time.perf_counter() - t0,
        }
        return {"loss": metrics["log_loss"], "status": STATUS_OK, "record": record}

    space = search_space(config)
    if config.use_spark_trials:
        from hyperopt import SparkTrials

        from al_tasks.spark import spark_session

        spark_session(config)  # SparkTrials uses the active session
        trials = SparkTrials(parallelism=config.spark_trials_parallelism)
    else:
        trials = Trials()
    best = fmin(
        objective, space, algo=tpe.suggest, max_evals=max_evals, trials=trials,
        rstate=np.random.default_rng(config.seed), show_progressbar=False,
    )
    best_params = space_eval(space, best)
    for number, trial in enumerate(trials.trials):
        result = trial.get("result", {})
        if "record" in result:
            records.append({"number": number, **result["record"]})
    best_loss = min(r["log_loss"] for r in records)
    model = TextClassifier(classes=classes, random_state=config.seed, **best_params).fit(X, y)
    seconds = time.perf_counter() - started
    log(
        f"tune: {len(records)} trials in {seconds:.1f}s; best {best_params} "
        f"(validation log loss {best_loss:.4f}, {len(train)} train / {len(validation)} validation)"
    )
    return TuneResult(model=model, best_params=best_params, best_loss=best_loss, trials=records,
                      n_train=len(train), n_validation=len(validation), seconds=seconds)
