"""Bootstrap intervals for per-item rates (steerscope.probes.intervals)."""

from __future__ import annotations

import pytest
import torch

from steerscope.errors import InputError
from steerscope.probes.intervals import mean_interval, paired_difference, paired_ratio_change, ratio_interval


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


def test_ratio_interval_resamples_items_not_their_samples():
    correct, samples = torch.tensor([2.0, 0.0, 1.0]), torch.tensor([2.0, 2.0, 2.0])
    low, high = ratio_interval(correct, samples, seed=0)
    assert low <= 0.5 <= high and low < high
    assert ratio_interval(correct, samples, seed=0) == (low, high)
    assert ratio_interval(torch.tensor([2.0, 2.0]), torch.tensor([2.0, 2.0])) == (1.0, 1.0)
    with pytest.raises(InputError, match="one length"):
        ratio_interval(correct, samples[:2])


def test_paired_ratio_change_gives_differences_or_relative_changes():
    before = (torch.tensor([10.0, 20.0]), torch.tensor([1.0, 1.0]))
    after = (torch.tensor([5.0, 10.0]), torch.tensor([1.0, 1.0]))
    relative = paired_ratio_change(after, before, relative=True)
    assert relative["delta"] == -0.5 and relative["low"] == relative["high"] == -0.5  # every resample halves
    assert paired_ratio_change(after, before)["delta"] == -7.5
    with pytest.raises(InputError, match="same items"):
        paired_ratio_change((after[0][:1], after[1][:1]), before)
