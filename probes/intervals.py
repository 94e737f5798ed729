"""Bootstrap confidence intervals for rates measured on a few dozen items.

A percentile bootstrap (Efron & Tibshirani 1993, ch. 13) over items: resample the items with
replacement, recompute the statistic, take the 2.5th and 97.5th percentiles. `paired_difference`
resamples the same items for both conditions, so the interval of an edit's effect reflects how
the answers to the *same* questions changed, not the spread of two independent rates.

When each item holds several samples (a problem solved several times), the samples of one item
are not independent: `ratio_interval` and `paired_ratio_change` resample the items (a cluster
bootstrap) and take the ratio of sums (e.g. correct answers / samples) over each resample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

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


def resampled_items(n_items: int, n: int = N_RESAMPLES, seed: int = 0) -> torch.Tensor:
    """[n, n_items] item indices, each row one resample with replacement (torch's generator)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_items, (n, n_items), generator=generator)


def _percentiles(values: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    return values.quantile(tail).item(), values.quantile(1 - tail).item()


def _check_clusters(totals: torch.Tensor, counts: torch.Tensor) -> None:
    if totals.ndim != 1 or len(totals) == 0 or totals.shape != counts.shape:
        raise InputError(
            f"totals and counts must be non-empty per-item lists of one length, got {tuple(totals.shape)} "
            f"and {tuple(counts.shape)}"
        )


def ratio_interval(
    totals: torch.Tensor, counts: torch.Tensor, level: float = 0.95, n: int = N_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """(low, high) interval of sum(totals) / sum(counts), resampling items: per-item sums over
    their samples (e.g. correct answers) and sample counts."""
    _check_clusters(totals, counts)
    picks = resampled_items(len(totals), n, seed)
    return _percentiles(totals[picks].sum(1) / counts[picks].sum(1), level)


def paired_ratio_change(
    after: tuple[torch.Tensor, torch.Tensor],
    before: tuple[torch.Tensor, torch.Tensor],
    relative: bool = False,
    level: float = 0.95,
    n: int = N_RESAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """How the ratio of sums (totals, counts) of `after` differs from that of `before` on the same
    items: the difference (`relative`: the ratio minus 1), with its interval over the same
    resampled items."""
    for totals, counts in (after, before):
        _check_clusters(totals, counts)
    if len(after[0]) != len(before[0]):
        raise InputError(
            f"after and before must score the same items, got {len(after[0])} and {len(before[0])}"
        )

    def change(idx: torch.Tensor) -> torch.Tensor:
        new = after[0][idx].sum(-1) / after[1][idx].sum(-1)
        old = before[0][idx].sum(-1) / before[1][idx].sum(-1)
        return new / old - 1 if relative else new - old

    low, high = _percentiles(change(resampled_items(len(after[0]), n, seed)), level)
    return {"delta": change(torch.arange(len(after[0]))).item(), "low": low, "high": high}
