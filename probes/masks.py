"""Sensitive-weight masks and their ablation (Wu et al. 2025, arXiv 2504.04238).

Per weight matrix: T_D = entries whose Fisher score on data set D is strictly greater than the
k-th largest score, k = floor(fraction * numel). The ToM-sensitive mask is M = T_tom AND NOT
T_generic. Ablation sets W[M] <- mu + s * (W[M] - mu), mu the mean of the whole matrix (s = 0:
mean replacement). The control is a random mask with the same count in every matrix.
Every threshold is taken per matrix; matrices are never pooled.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import Tensor

from steerscope.errors import InputError
from steerscope.model import ModelLike
from steerscope.perturb import perturb

T = TypeVar("T")


def top_k_mask(scores: Tensor, fraction: float) -> Tensor:
    """Entries of `scores` strictly greater than its k-th largest value, k = floor(fraction * numel).

    `scores`: any shape; returns a bool tensor of that shape. Ties at the threshold are all left
    out, so at most k - 1 entries are selected; k == 0 gives an empty mask.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise InputError(f"fraction must be a number in [0, 1], got {fraction!r}")
    if not scores.is_floating_point():
        raise InputError(f"scores must be a floating-point tensor, got {scores.dtype}")
    n = scores.numel()
    k = math.floor(fraction * n)
    if k == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    flat = scores.detach().reshape(-1)
    if torch.isnan(flat).any():
        raise InputError("scores contain NaN; the k-th largest value is undefined")
    kth_largest = torch.kthvalue(flat, n - k + 1).values
    return scores > kth_largest


def _same_names(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    if set(a) != set(b):
        only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise InputError(
            f"{what} name different matrices: only in first {only_a[:3]}, only in second {only_b[:3]}"
        )
    for name in a:
        if a[name].shape != b[name].shape:
            raise InputError(
                f"{what} disagree on the shape of {name}: {tuple(a[name].shape)} vs {tuple(b[name].shape)}"
            )


def sensitive_masks(
    tom_scores: Mapping[str, Tensor], generic_scores: Mapping[str, Tensor], fraction: float
) -> dict[str, Tensor]:
    """M = top_k(tom) AND NOT top_k(generic), per matrix: {name: bool tensor shaped like the weight}."""
    return sensitive_mask_pair(tom_scores, generic_scores, fraction, mirror=False)[0]


def sensitive_mask_pair(
    tom_scores: Mapping[str, Tensor],
    generic_scores: Mapping[str, Tensor],
    fraction: float,
    mirror: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(M, its mirror): `sensitive_masks` and, with `mirror`, top_k(generic) AND NOT top_k(tom)
    (the generic-specific control), each matrix's two top-k sets found once for both."""
    _same_names(tom_scores, generic_scores, "tom_scores and generic_scores")
    masks, mirrors = {}, {}
    for name, tom in tom_scores.items():
        top_tom = top_k_mask(tom, fraction)
        top_generic = top_k_mask(generic_scores[name].to(tom.device), fraction)
        masks[name] = top_tom & ~top_generic
        if mirror:
            mirrors[name] = top_generic & ~top_tom
    return masks, mirrors


def _matrix_seed(seed: int, name: str) -> int:
    """A 63-bit seed from (seed, matrix name), so each matrix's draw does not depend on dict order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") >> 1


def random_masks(reference_masks: Mapping[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Uniformly random masks with the same number of True entries as each reference matrix.

    {name: bool tensor of the reference's shape and device}; deterministic in (seed, name).
    """
    out: dict[str, Tensor] = {}
    for name, reference in reference_masks.items():
        count = int(reference.sum())
        generator = torch.Generator().manual_seed(_matrix_seed(seed, name))
        chosen = torch.randperm(reference.numel(), generator=generator)[:count]
        mask = torch.zeros(reference.numel(), dtype=torch.bool)
        mask[chosen] = True
        out[name] = mask.reshape(reference.shape).to(reference.device)
    return out


def mask_counts(masks: Mapping[str, Tensor]) -> int:
    """Total number of selected entries over all matrices."""
    return sum(int(mask.sum()) for mask in masks.values())


def mean_replacement(
    model: ModelLike, masks: Mapping[str, Tensor], scale: float = 0.0
) -> contextlib.AbstractContextManager[None]:
    """Context manager: W[M] <- mu + scale * (W[M] - mu) per matrix, mu the mean of all of W.

    Built on `steerscope.perturb.perturb`, so the weights are restored bit-exactly on exit,
    exceptions included. mu and the shrink are computed in fp32 and cast to the weight dtype.
    """

    def shrink(selected: Tensor, weight: Tensor) -> Tensor:
        mu = weight.float().mean()
        if scale == 0.0:
            return mu.expand(selected.shape)
        return mu + scale * (selected.float() - mu)

    return perturb(model, {name: (mask, shrink) for name, mask in masks.items()})


def under_random_masks(
    model: ModelLike, masks: Mapping[str, Tensor], n_seeds: int, scale: float, measure: Callable[[], T]
) -> list[T]:
    """`measure()` under mean replacement of each of `n_seeds` random masks of `masks`' sizes
    (seeds 1000, 1001, ...: the same-size random control every mask experiment reports)."""
    results = []
    for seed in range(n_seeds):
        with mean_replacement(model, random_masks(masks, seed=1000 + seed), scale):
            results.append(measure())
    return results
