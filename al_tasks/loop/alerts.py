"""Accuracy alerts of the active-learning loop (plain Python, no Airflow).

After each round the evaluation accuracy is checked against three rules from
:class:`~al_tasks.config.LoopConfig`:

* ``below_threshold`` -- accuracy < ``alert_min_accuracy``;
* ``accuracy_drop``   -- previous accuracy - accuracy > ``alert_max_drop``;
* ``target_reached``  -- accuracy >= ``target_accuracy``.

The resulting :class:`Alert` objects are turned into a Slack-compatible JSON payload by
:func:`alert_payload`; the Airflow notifiers in ``plugins/al_notifiers.py`` deliver it.
:func:`round_alerts` checks a round against the previous round's recorded accuracy.

    >>> [a.kind for a in check_accuracy("demo", 3, 0.55, 0.70,
    ...                                 min_accuracy=0.6, max_drop=0.03, target_accuracy=0.9)]
    ['below_threshold', 'accuracy_drop']
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from al_tasks.config import LoopConfig

BELOW_THRESHOLD = "below_threshold"
ACCURACY_DROP = "accuracy_drop"
TARGET_REACHED = "target_reached"
ALERT_KINDS: tuple[str, ...] = (BELOW_THRESHOLD, ACCURACY_DROP, TARGET_REACHED)

#: Accuracies are ratios of counts, and ``0.80 - 0.77`` is ``0.030000000000000027`` in
#: floating point; comparisons allow this much slack so a value exactly on a threshold
#: is treated as on it, not past it.
_TOLERANCE = 1e-9

# Slack attachment colours: problems in red/orange, good news in green.
_KIND_COLOUR = {BELOW_THRESHOLD: "danger", ACCURACY_DROP: "warning", TARGET_REACHED: "good"}
_KIND_TITLE = {
    BELOW_THRESHOLD: "Accuracy below threshold",
    ACCURACY_DROP: "Accuracy drop",
    TARGET_REACHED: "Target accuracy reached",
}


@dataclass(frozen=True)
class Alert:
    """One alert about the evaluation accuracy of one round.

    Attributes
    ----------
    kind : str, one of :data:`ALERT_KINDS`
    task : str, name of the classification task (``LoopConfig.task``)
    round_number : int, the round that was evaluated
    accuracy : float, evaluation accuracy of this round, in [0, 1]
    previous_accuracy : float or None, accuracy of the previous round, if any
    threshold : float, the setting that was crossed: the minimum accuracy for
        ``below_threshold``, the allowed drop for ``accuracy_drop``, the target accuracy
        for ``target_reached``
    message : str, human-readable one-line description
    """

    kind: str
    task: str
    round_number: int
    accuracy: float
    previous_accuracy: float | None
    threshold: float
    message: str

    @property
    def is_problem(self) -> bool:
        """True for alerts that ask for attention (all but ``target_reached``)."""
        return self.kind != TARGET_REACHED


def check_accuracy(
    task: str,
    round_number: int,
    accuracy: float,
    previous_accuracy: float | None,
    *,
    min_accuracy: float,
    max_drop: float,
    target_accuracy: float,
) -> list[Alert]:
    """Alerts raised by one round's evaluation accuracy.

    Parameters
    ----------
    task : name of the classification task
    round_number : round that was evaluated
    accuracy : evaluation accuracy in [0, 1]
    previous_accuracy : accuracy of the previous round; None on the first round (then no
        drop can be detected)
    min_accuracy : alert when ``accuracy`` is strictly below this
    max_drop : alert when ``previous_accuracy - accuracy`` is strictly greater than this (>= 0)
    target_accuracy : report when ``accuracy`` is at least this

    Returns
    -------
    list of Alert, in the order below_threshold, accuracy_drop, target_reached; empty
    when nothing is noteworthy

    Raises
    ------
    ValueError
        an accuracy that is not a number in [0, 1] (e.g. NaN from a failed evaluation)
        or a negative ``max_drop``: raising no alert there would hide the failure
    """
    # Plain floats, so that numpy scalars (e.g. float32) end up JSON-serialisable.
    accuracy, previous_accuracy, min_accuracy, max_drop, target_accuracy = _validated(
        accuracy, previous_accuracy, min_accuracy, max_drop, target_accuracy
    )
    prefix = f"Task {task!r}, round {int(round_number)}:"
    fired = _fired_rules(accuracy, previous_accuracy, min_accuracy, max_drop, target_accuracy)
    return [
        Alert(
            kind=kind,
            task=task,
            round_number=int(round_number),
            accuracy=accuracy,
            previous_accuracy=previous_accuracy,
            threshold=threshold,
            message=f"{prefix} {text}",
        )
        for kind, threshold, text in fired
    ]


def _fired_rules(accuracy, previous_accuracy, min_accuracy, max_drop, target_accuracy) -> list[tuple]:
    """(kind, threshold, message text) of every rule that fires, in :data:`ALERT_KINDS` order."""
    fired = []
    if accuracy < min_accuracy - _TOLERANCE:
        fired.append(
            (BELOW_THRESHOLD, min_accuracy, f"accuracy {accuracy:.3f} is below the alert minimum {min_accuracy:.3f}.")
        )
    if previous_accuracy is not None and previous_accuracy - accuracy > max_drop + _TOLERANCE:
        fired.append(
            (
                ACCURACY_DROP,
                max_drop,
                f"accuracy dropped by {previous_accuracy - accuracy:.3f}, from {previous_accuracy:.3f} "
                f"to {accuracy:.3f} (allowed drop {max_drop:.3f}).",
            )
        )
    if accuracy >= target_accuracy - _TOLERANCE:
        fired.append(
            (TARGET_REACHED, target_accuracy, f"accuracy {accuracy:.3f} reached the target {target_accuracy:.3f}.")
        )
    return fired


def _validated(accuracy, previous_accuracy, min_accuracy, max_drop, target_accuracy) -> tuple:
    """The inputs as plain floats (numpy scalars would not be JSON-serialisable), checked."""
    max_drop = float(max_drop)
    if not math.isfinite(max_drop) or max_drop < 0:
        raise ValueError(f"max_drop={max_drop!r}: must be a number >= 0")
    previous = None if previous_accuracy is None else _as_fraction("previous_accuracy", previous_accuracy)
    return (
        _as_fraction("accuracy", accuracy),
        previous,
        _as_fraction("min_accuracy", min_accuracy),
        max_drop,
        _as_fraction("target_accuracy", target_accuracy),
    )


def check_round_accuracy(
    config: LoopConfig, round_number: int, accuracy: float, previous_accuracy: float | None
) -> list[Alert]:
    """:func:`check_accuracy` with the task name and thresholds of ``config``
    (``task``, ``alert_min_accuracy``, ``alert_max_drop``, ``target_accuracy``).
    """
    return check_accuracy(
        config.task,
        round_number,
        accuracy,
        previous_accuracy,
        min_accuracy=config.alert_min_accuracy,
        max_drop=config.alert_max_drop,
        target_accuracy=config.target_accuracy,
    )


def alert_payload(alert: Alert) -> dict[str, Any]:
    """Slack-compatible JSON payload for one alert.

    Slack incoming webhooks render ``text`` and the legacy ``attachments``; other
    receivers can read the same data, unformatted, under ``alert``.

    Returns
    -------
    dict ``{"text": str, "attachments": [...], "alert": {every Alert field}}``, JSON-serialisable
    """
    fields = [
        {"title": "Task", "value": alert.task, "short": True},
        {"title": "Round", "value": str(alert.round_number), "short": True},
        {"title": "Accuracy", "value": f"{alert.accuracy:.3f}", "short": True},
    ]
    if alert.previous_accuracy is not None:
        fields.append({"title": "Previous accuracy", "value": f"{alert.previous_accuracy:.3f}", "short": True})
    fields.append({"title": "Threshold", "value": f"{alert.threshold:.3f}", "short": True})

    title = _KIND_TITLE.get(alert.kind, alert.kind)
    return {
        "text": f"[active learning] {title}: {alert.message}",
        "attachments": [
            {
                "color": _KIND_COLOUR.get(alert.kind, "warning"),
                "title": title,
                "fields": fields,
            }
        ],
        "alert": dataclasses.asdict(alert),
    }


def _as_fraction(name: str, value: float) -> float:
    """``value`` as a float in [0, 1]; ValueError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: must be a number in [0, 1]") from None
    if not math.isfinite(number) or not 0 <= number <= 1:
        raise ValueError(f"{name}={value!r}: must be a number in [0, 1]")
    return number


def round_alerts(config: LoopConfig, round_number: int, accuracy: float) -> tuple[list[Alert], float | None]:
    """(alerts of this round, the previous round's accuracy) -- the previous accuracy is
    the one recorded in the workspace's round summary, None on the first round.
    """
    from al_tasks.workspace import TaskWorkspace

    previous = TaskWorkspace(config).read_summary(round_number - 1) if round_number > 1 else None
    previous_accuracy = previous.get("accuracy") if previous else None
    return check_round_accuracy(config, round_number, accuracy, previous_accuracy), previous_accuracy
