"""The loop's rules: when it stops, and what the next round is. Pure functions, no I/O.

Stop rules are small objects (as in small-text's stopping criteria): each looks at a
:class:`RoundState` and returns the reason the loop stops, or None. Two moments matter:

* **before the query** (after training, :data:`RULES_BEFORE_QUERY`): target accuracy
  reached, last allowed round, empty pool -- then nobody is asked for labels that no
  round will use;
* **after the wait** (:data:`RULES_AFTER_WAIT`): labels stopped arriving (no file before
  the sensor's timeout, or a file without a single usable label).

:func:`decide_next_round` turns a round's outcome into the next round's run id and conf.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from al_tasks.config import LoopConfig


@dataclasses.dataclass(frozen=True)
class RoundState:
    """What the stop rules look at.

    Attributes
    ----------
    round_number : the round that just trained (>= 1)
    accuracy : its evaluation accuracy
    pool_size : items left to query
    labels_arrived : None before the wait; False when no labelled file came in time
    labels_accepted : usable labels in the file that came (None before the wait)
    labels_skipped, labels_rejected : the file's other rows (for the message)
    source : the labelled file's name (for the message)
    """

    round_number: int
    accuracy: float
    pool_size: int
    labels_arrived: bool | None = None
    labels_accepted: int | None = None
    labels_skipped: int = 0
    labels_rejected: int = 0
    source: str = ""


class StopRule:
    """Base class: ``reason(state, config)`` is why the loop stops, or None."""

    name = "stop_rule"

    def reason(self, state: RoundState, config: LoopConfig) -> str | None:  # pragma: no cover - interface
        raise NotImplementedError


class TargetAccuracyReached(StopRule):
    name = "target_accuracy"

    def reason(self, state, config):
        if state.accuracy >= config.target_accuracy:
            return f"target accuracy reached: {state.accuracy:.4f} >= target_accuracy {config.target_accuracy:.4f}"
        return None


class MaxRoundsReached(StopRule):
    name = "max_rounds"

    def reason(self, state, config):
        if state.round_number >= config.max_rounds:
            return f"max_rounds reached: round {state.round_number} of {config.max_rounds}"
        return None


class PoolExhausted(StopRule):
    name = "pool_exhausted"

    def reason(self, state, config):
        if state.pool_size <= 0:
            return "pool exhausted: every corpus item is labelled or in the evaluation set"
        return None


class LabelsStoppedArriving(StopRule):
    """No labelled file before the timeout, or a file without one usable label."""

    name = "labels_stopped"

    def reason(self, state, config):
        inbox = f"s3://{config.bucket}/{config.task_prefix('inbox_prefix')}"
        if not state.labels_arrived:
            return (
                f"labels stopped arriving: no labelled file for round {state.round_number} reached {inbox} "
                f"within sensor_timeout_seconds={config.sensor_timeout_seconds}"
            )
        if not state.labels_accepted:
            return (
                f"labels stopped arriving: {state.source} gave no usable label "
                f"({state.labels_skipped} left blank, {state.labels_rejected} rejected)"
            )
        return None


RULES_BEFORE_QUERY: tuple[StopRule, ...] = (TargetAccuracyReached(), MaxRoundsReached(), PoolExhausted())
RULES_AFTER_WAIT: tuple[StopRule, ...] = (LabelsStoppedArriving(),)


def first_stop_reason(rules: Sequence[StopRule], state: RoundState, config: LoopConfig) -> str | None:
    """The reason of the first rule that holds, or None."""
    for rule in rules:
        reason = rule.reason(state, config)
        if reason:
            return reason
    return None


def plan_round(config: LoopConfig, round_number: int, accuracy: float, pool_size: int) -> dict:
    """Whether this round asks for labels at all (checked after training).

    Returns ``{"round", "query" (bool), "stop_reason" (str or None), "pool_size",
    "batch" (labels asked for, 0 when not querying), "accuracy"}``.
    """
    state = RoundState(round_number=round_number, accuracy=accuracy, pool_size=pool_size)
    reason = first_stop_reason(RULES_BEFORE_QUERY, state, config)
    return {
        "round": round_number,
        "query": reason is None,
        "stop_reason": reason,
        "pool_size": pool_size,
        "batch": 0 if reason else min(config.batch_count(pool_size), pool_size),
        "accuracy": accuracy,
    }


def next_run_id(loop_id: str, next_round: int) -> str:
    """Run id of round ``next_round`` of the loop ``loop_id``.

    Deterministic, so triggering the same round twice (a cleared, re-run old round)
    hits "run already exists" instead of forking the loop.
    """
    return f"round-{next_round}__{loop_id}"


def decide_next_round(
    config: LoopConfig,
    plan: Mapping[str, Any],
    ingested: Mapping[str, Any] | None,
    *,
    params: Mapping[str, Any],
    loop_id: str,
) -> dict:
    """Whether the loop goes on after this round, and with what.

    Parameters
    ----------
    config : the round's settings
    plan : :func:`plan_round`'s result for this round
    ingested : the ingest's result (``accepted``, ``skipped``, ``rejected``, ``source``),
        or None when no labelled file arrived
    params : this run's Params; the next round gets the same ones with ``round`` + 1
    loop_id : the loop's id (the first round's run id)

    Returns
    -------
    dict ``{"round", "continue", "reason", "loop_id"}`` plus, when continuing,
    ``next_round``, ``next_run_id`` and ``next_conf``
    """
    number = int(plan["round"])
    reason = plan.get("stop_reason")
    if not reason:
        state = RoundState(
            round_number=number,
            accuracy=float(plan.get("accuracy") or 0.0),
            pool_size=int(plan.get("pool_size") or 0),
            labels_arrived=ingested is not None,
            labels_accepted=int((ingested or {}).get("accepted", 0)),
            labels_skipped=int((ingested or {}).get("skipped", 0)),
            labels_rejected=int((ingested or {}).get("rejected", 0)),
            source=str((ingested or {}).get("source", "")),
        )
        reason = first_stop_reason(RULES_AFTER_WAIT, state, config)
    decision: dict[str, Any] = {"round": number, "continue": reason is None, "reason": reason, "loop_id": loop_id}
    if reason is None:
        next_conf = {key: list(value) if isinstance(value, tuple) else value for key, value in params.items()}
        next_conf.update(round=number + 1, loop_id=loop_id)
        decision.update(next_round=number + 1, next_run_id=next_run_id(loop_id, number + 1), next_conf=next_conf)
    return decision
