"""Accuracy alert rules and their payload (no service)."""

from __future__ import annotations

import json

import pytest

from al_tasks.config import LoopConfig
from al_tasks.loop.alerts import (
    ACCURACY_DROP,
    BELOW_THRESHOLD,
    TARGET_REACHED,
    Alert,
    alert_payload,
    check_accuracy,
    check_round_accuracy,
)

THRESHOLDS = {"min_accuracy": 0.60, "max_drop": 0.03, "target_accuracy": 0.90}


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.kind for a in alerts]


# --- rules -----------------------------------------------------------------------------


def test_no_alert_between_minimum_and_target():
    assert check_accuracy("t", 2, 0.75, 0.74, **THRESHOLDS) == []


@pytest.mark.parametrize(
    ("accuracy", "expected"),
    [(0.599, [BELOW_THRESHOLD]), (0.0, [BELOW_THRESHOLD]), (0.60, []), (0.601, [])],
)
def test_below_threshold_is_strictly_below_minimum(accuracy, expected):
    assert kinds(check_accuracy("t", 1, accuracy, None, **THRESHOLDS)) == expected


@pytest.mark.parametrize(
    ("previous", "accuracy", "expected"),
    [
        (0.80, 0.77, []),  # exactly the allowed drop (0.030000000000000027 in floats)
        (0.80, 0.769, [ACCURACY_DROP]),  # just over it
        (0.85, 0.70, [ACCURACY_DROP]),
        (0.70, 0.80, []),  # improvement
        (0.80, 0.80, []),
    ],
)
def test_accuracy_drop_is_strictly_more_than_allowed(previous, accuracy, expected):
    assert kinds(check_accuracy("t", 4, accuracy, previous, **THRESHOLDS)) == expected


def test_no_drop_alert_without_previous_round():
    assert check_accuracy("t", 0, 0.65, None, **THRESHOLDS) == []


@pytest.mark.parametrize(("accuracy", "expected"), [(0.90, [TARGET_REACHED]), (1.0, [TARGET_REACHED]), (0.899, [])])
def test_target_reached_at_or_above_target(accuracy, expected):
    assert kinds(check_accuracy("t", 5, accuracy, 0.88, **THRESHOLDS)) == expected


def test_several_rules_fire_in_fixed_order_with_their_thresholds():
    alerts = check_accuracy("t", 3, 0.50, 0.70, **THRESHOLDS)
    assert kinds(alerts) == [BELOW_THRESHOLD, ACCURACY_DROP]
    assert [a.threshold for a in alerts] == [0.60, 0.03]
    # A target below the minimum is odd but legal: all three can fire together.
    odd = check_accuracy("t", 3, 0.50, 0.70, min_accuracy=0.6, max_drop=0.03, target_accuracy=0.4)
    assert kinds(odd) == [BELOW_THRESHOLD, ACCURACY_DROP, TARGET_REACHED]


def test_alert_fields_and_messages_use_three_decimals():
    below, drop = check_accuracy("product_group", 7, 0.5, 0.71234, **THRESHOLDS)
    assert below == Alert(
        kind=BELOW_THRESHOLD,
        task="product_group",
        round_number=7,
        accuracy=0.5,
        previous_accuracy=0.71234,
        threshold=0.6,
        message="Task 'product_group', round 7: accuracy 0.500 is below the alert minimum 0.600.",
    )
    assert drop.message == (
        "Task 'product_group', round 7: accuracy dropped by 0.212, from 0.712 to 0.500 (allowed drop 0.030)."
    )
    (target,) = check_accuracy("product_group", 8, 0.9, 0.89, **THRESHOLDS)
    assert target.message == ("Task 'product_group', round 8: accuracy 0.900 reached the target 0.900.")
    with pytest.raises(AttributeError):  # frozen
        target.accuracy = 0.1  # type: ignore[misc]


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1.5, None, "high"])
def test_unusable_accuracy_is_an_error_not_silence(bad):
    with pytest.raises(ValueError, match="accuracy"):
        check_accuracy("t", 1, bad, None, **THRESHOLDS)


def test_negative_max_drop_is_rejected():
    with pytest.raises(ValueError, match="max_drop"):
        check_accuracy("t", 1, 0.7, 0.8, min_accuracy=0.6, max_drop=-0.01, target_accuracy=0.9)


def test_check_round_accuracy_uses_loop_config_thresholds():
    config = LoopConfig().with_overrides(
        {
            "task": "debt",
            "alert_min_accuracy": "0.7",
            "alert_max_drop": "0.1",
            "target_accuracy": "0.95",
        }
    )
    assert kinds(check_round_accuracy(config, 2, 0.69, 0.75)) == [BELOW_THRESHOLD]
    assert kinds(check_round_accuracy(config, 2, 0.72, 0.85)) == [ACCURACY_DROP]
    assert kinds(check_round_accuracy(config, 2, 0.95, 0.90)) == [TARGET_REACHED]
    assert all(a.task == "debt" for a in check_round_accuracy(config, 2, 0.5, None))


def test_payload_is_slack_compatible_json_with_structured_fields():
    (alert,) = check_accuracy("t", 3, 0.55, None, **THRESHOLDS)
    payload = json.loads(json.dumps(alert_payload(alert)))  # must survive JSON
    assert payload["text"].startswith("[active learning] Accuracy below threshold: ")
    assert alert.message in payload["text"]
    assert payload["alert"] == {
        "kind": "below_threshold",
        "task": "t",
        "round_number": 3,
        "accuracy": 0.55,
        "previous_accuracy": None,
        "threshold": 0.6,
        "message": alert.message,
    }
    (attachment,) = payload["attachments"]
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {"Task": "t", "Round": "3", "Accuracy": "0.550", "Threshold": "0.600"}
