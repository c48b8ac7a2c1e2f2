"""The tuning bound check's rules (al_tasks.ml.tune), without fitting anything."""

from __future__ import annotations

import math

import pytest

from al_tasks.config import LoopConfig
from al_tasks.errors import ConfigError
from al_tasks.ml.tune import C_BOUND_SHARE, c_at_bound, search_space, shifted_range


def test_c_at_bound():
    width = 11 * C_BOUND_SHARE  # of the range e^-6 .. e^5
    assert c_at_bound(math.exp(5.0), (-6.0, 5.0)) == "high"
    assert c_at_bound(math.exp(5.0 - width / 2), (-6.0, 5.0)) == "high"
    assert c_at_bound(math.exp(-6.0 + width / 2), (-6.0, 5.0)) == "low"
    assert c_at_bound(math.exp(1.0), (-6.0, 5.0)) == "no"  # the old e^1 bound is inside now
    assert c_at_bound(math.exp(5.0 - 1.5 * width), (-6.0, 5.0)) == "no"
    assert c_at_bound(math.exp(-5.2), (-6.0, -5.0)) == "no"  # the share scales with the range


def test_shifted_range_moves_half_a_width_past_the_bound():
    assert shifted_range((-6.0, 5.0), "high") == (-0.5, 10.5)
    assert shifted_range((-6.0, 5.0), "low") == (-11.5, -0.5)


def test_defaults_search_a_wide_c_range_and_class_weights():
    config = LoopConfig()
    assert (config.log_c_low, config.log_c_high) == (-6.0, 9.0) and config.c_bound_shifts == 1
    assert config.search_class_weight
    assert set(search_space(config)) == {"penalty", "C", "class_weight"}
    with pytest.raises(ConfigError):
        LoopConfig(c_bound_shifts=-1)
