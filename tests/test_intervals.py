"""Bootstrap intervals for per-item rates (steerscope.probes.intervals)."""

from __future__ import annotations

import pytest

from steerscope.errors import InputError
from steerscope.probes.intervals import mean_interval, paired_difference


def test_the_interval_holds_the_rate_and_narrows_with_more_items():
    few = [1.0] * 6 + [0.0] * 4
    many = few * 10
    low, high = mean_interval(few, seed=0)
    assert low < 0.6 < high and 0.0 <= low and high <= 1.0
    many_low, many_high = mean_interval(many, seed=0)
    assert many_low < 0.6 < many_high and many_high - many_low < (high - low) / 2


def test_a_constant_rate_has_no_spread():
    assert mean_interval([1.0] * 12) == (1.0, 1.0)


def test_paired_difference_counts_changes_of_the_same_items():
    before = [0.0] * 20
    after = [1.0] * 5 + [0.0] * 15
    change = paired_difference(after, before, seed=0)
    assert change["delta"] == pytest.approx(0.25) and 0.0 < change["low"] < 0.25 < change["high"]
    unchanged = paired_difference(before, before)
    assert (unchanged["delta"], unchanged["low"], unchanged["high"]) == (0.0, 0.0, 0.0)


def test_mismatched_or_empty_scores_are_refused():
    with pytest.raises(InputError, match="same items"):
        paired_difference([1.0, 0.0], [1.0])
    with pytest.raises(InputError, match="non-empty"):
        mean_interval([])
