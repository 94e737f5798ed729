"""Rotate-half RoPE on [batch, pos, head, head_dim] tensors, with the model's own cos and sin.

Pair i of a head is dims (i, i + head_dim/2); it turns by angle position * theta_i with
theta_i = base^(-2i/head_dim). `cos`/`sin` are what the model computed ([batch, pos, head_dim],
both halves repeated), including any attention scaling of scaled RoPE variants.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dimension."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply RoPE to x [batch, pos, head, head_dim] given cos, sin [batch or 1, pos, head_dim]."""
    cos, sin = cos[:, :, None, :].to(x.dtype), sin[:, :, None, :].to(x.dtype)
    return x * cos + rotate_half(x) * sin


def unrotate(y: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Invert `rotate`: the rotation by minus the angle, divided by the squared scale."""
    cos, sin = cos[:, :, None, :].to(y.dtype), sin[:, :, None, :].to(y.dtype)
    return (y * cos - rotate_half(y) * sin) / (cos * cos + sin * sin)


def pair_frequencies(base: float, head_dim: int) -> Tensor:
    """theta_i = base^(-2i/head_dim) for each rotary pair i (float64)."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    return base ** (-2.0 * i / head_dim)


def fold_pairs(per_dim: Tensor) -> Tensor:
    """Add each dimension's value to its rotary partner's: [..., head_dim] -> [..., head_dim/2]."""
    half = per_dim.shape[-1] // 2
    return per_dim[..., :half] + per_dim[..., half:]


def pair_norms(x: Tensor) -> Tensor:
    """Norm of each rotary pair: [..., head_dim] -> [..., head_dim/2]."""
    return fold_pairs(x**2).sqrt()
