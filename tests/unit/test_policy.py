"""The loop's stop rules and next-round decision (pure functions, no service)."""

from __future__ import annotations

import pytest

from al_tasks.config import LoopConfig
from al_tasks.loop.policy import (
    LabelsStoppedArriving,
    MaxRoundsReached,
    PoolExhausted,
    RoundState,
    TargetAccuracyReached,
    decide_next_round,
    next_run_id,
    plan_round,
)

CONFIG = LoopConfig(target_accuracy=0.9, max_rounds=5, batch_size=100, bucket="b", task="t")
PARAMS = {"round": 2, "max_evals": 4, "classes": ("a", "b"), "loop_id": None}


def test_target_accuracy_reached_stops_before_the_query():
    plan = plan_round(CONFIG, 2, accuracy=0.9, pool_size=1000)
    assert plan["query"] is False and plan["batch"] == 0
    assert plan["stop_reason"] == "target accuracy reached: 0.9000 >= target_accuracy 0.9000"


def test_max_rounds_reached_stops_before_the_query():
    plan = plan_round(CONFIG, 5, accuracy=0.5, pool_size=1000)
    assert plan["query"] is False and plan["stop_reason"] == "max_rounds reached: round 5 of 5"


def test_empty_pool_stops_before_the_query():
    plan = plan_round(CONFIG, 2, accuracy=0.5, pool_size=0)
    assert plan["query"] is False and plan["stop_reason"].startswith("pool exhausted")


@pytest.mark.parametrize(
    ("round_number", "accuracy", "pool", "batch"), [(1, 0.0, 1000, 100), (4, 0.8999, 1000, 100), (2, 0.5, 40, 40)]
)
def test_the_loop_queries_when_no_rule_holds(round_number, accuracy, pool, batch):
    plan = plan_round(CONFIG, round_number, accuracy=accuracy, pool_size=pool)
    assert plan == {
        "round": round_number,
        "query": True,
        "stop_reason": None,
        "pool_size": pool,
        "batch": batch,
        "accuracy": accuracy,
    }


def test_rules_are_checked_in_order_target_first():
    # Target reached in the last round: the target is the reason that counts.
    assert plan_round(CONFIG, 5, accuracy=0.95, pool_size=0)["stop_reason"].startswith("target accuracy")


def test_each_rule_alone():
    state = RoundState(round_number=3, accuracy=0.5, pool_size=10)
    assert TargetAccuracyReached().reason(state, CONFIG) is None
    assert MaxRoundsReached().reason(state, CONFIG) is None
    assert PoolExhausted().reason(state, CONFIG) is None
    assert (
        LabelsStoppedArriving().reason(RoundState(3, 0.5, 10, labels_arrived=True, labels_accepted=1), CONFIG) is None
    )


def _plan(round_number=2, query=True, reason=None):
    return {
        "round": round_number,
        "query": query,
        "stop_reason": reason,
        "pool_size": 500,
        "batch": 100,
        "accuracy": 0.7,
    }


def test_labels_stopped_arriving_when_no_file_came():
    decision = decide_next_round(CONFIG, _plan(), None, params=PARAMS, loop_id="L")
    assert decision["continue"] is False
    assert decision["reason"] == (
        "labels stopped arriving: no labelled file for round 2 reached s3://b/inbox/t/ "
        f"within sensor_timeout_seconds={CONFIG.sensor_timeout_seconds}"
    )


def test_labels_stopped_arriving_when_the_file_has_no_usable_label():
    ingested = {"accepted": 0, "skipped": 97, "rejected": 3, "source": "s3://b/inbox/t/round-2.csv"}
    decision = decide_next_round(CONFIG, _plan(), ingested, params=PARAMS, loop_id="L")
    assert decision["continue"] is False
    assert decision["reason"] == (
        "labels stopped arriving: s3://b/inbox/t/round-2.csv gave no usable label (97 left blank, 3 rejected)"
    )


def test_a_stop_before_the_query_is_the_decision_whatever_was_ingested():
    plan = _plan(query=False, reason="max_rounds reached: round 5 of 5")
    decision = decide_next_round(CONFIG, plan, {"accepted": 100}, params=PARAMS, loop_id="L")
    assert decision == {"round": 2, "continue": False, "reason": "max_rounds reached: round 5 of 5", "loop_id": "L"}


def test_continue_carries_the_params_to_the_next_round():
    decision = decide_next_round(
        CONFIG, _plan(), {"accepted": 1, "skipped": 99, "rejected": 0}, params=PARAMS, loop_id="manual__1"
    )
    assert decision["continue"] is True and decision["reason"] is None
    assert decision["next_round"] == 3
    assert decision["next_run_id"] == "round-3__manual__1" == next_run_id("manual__1", 3)
    assert decision["next_conf"] == {"round": 3, "max_evals": 4, "classes": ["a", "b"], "loop_id": "manual__1"}
