"""Bootstrap confidence intervals for rates measured on a few dozen items.

A percentile bootstrap (Efron & Tibshirani 1993, ch. 13) over items: resample the items with
replacement, recompute the statistic, take the 2.5th and 97.5th percentiles. `paired_difference`
resamples the same items for both conditions, so the interval of an edit's effect reflects how
the answers to the *same* questions changed, not the spread of two independent rates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from steerscope.errors import InputError

N_RESAMPLES = 2000


def _check(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 1 or len(array) == 0:
        raise InputError(f"{name} must be a non-empty list of numbers, got shape {array.shape}")
    return array


def mean_interval(
    values: Sequence[float], level: float = 0.95, n: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap interval of the mean of per-item `values` (e.g. 0/1 hits)."""
    array = _check(values, "values")
    rows = np.random.default_rng(seed).integers(0, len(array), size=(n, len(array)))
    means = array[rows].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def paired_difference(
    after: Sequence[float], before: Sequence[float], level: float = 0.95, n: int = N_RESAMPLES, seed: int = 0
) -> dict[str, float]:
    """mean(after - before) over the same items with its percentile-bootstrap interval."""
    a, b = _check(after, "after"), _check(before, "before")
    if a.shape != b.shape:
        raise InputError(f"after and before must score the same items, got {len(a)} and {len(b)}")
    low, high = mean_interval(a - b, level, n, seed)
    return {"delta": float((a - b).mean()), "low": low, "high": high}
