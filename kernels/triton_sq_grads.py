"""Fused sum of squared per-sample gradients of a linear weight, as a Triton kernel.

Computes out += sum_b (delta_b^T x_b)^2 elementwise, like `per_sample_grads.squared_grad_sum`,
without ever storing a per-sample gradient: each program owns one [block_o, block_i] tile of the
weight, forms that tile of G_b = sum_t delta_{b,t} x_{b,t}^T in registers for one sample at a
time, squares it and adds it to a running tile sum, so memory traffic is the inputs plus one
write of the tile. Runs on a GPU, or on the CPU under the Triton interpreter
(TRITON_INTERPRET=1, set before this module is imported), which is how it is tested here.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from steerscope.errors import InputError


@triton.jit
def _squared_grad_sum_kernel(
    delta_ptr,
    x_ptr,
    out_ptr,
    n_samples,
    seq,
    d_out,
    d_in,
    stride_db,
    stride_dt,
    stride_do,
    stride_xb,
    stride_xt,
    stride_xi,
    stride_oo,
    stride_oi,
    block_o: tl.constexpr,
    block_i: tl.constexpr,
    block_t: tl.constexpr,
):
    rows = tl.program_id(0) * block_o + tl.arange(0, block_o)
    cols = tl.program_id(1) * block_i + tl.arange(0, block_i)
    tokens = tl.arange(0, block_t)
    total = tl.zeros((block_o, block_i), dtype=tl.float32)
    for b in range(0, n_samples):
        grad = tl.zeros((block_o, block_i), dtype=tl.float32)  # this sample's gradient tile
        for t0 in range(0, seq, block_t):
            t = t0 + tokens
            delta_t = tl.load(  # [block_o, block_t]: delta transposed
                delta_ptr + b * stride_db + t[None, :] * stride_dt + rows[:, None] * stride_do,
                mask=(t[None, :] < seq) & (rows[:, None] < d_out),
                other=0.0,
            )
            x_t = tl.load(  # [block_t, block_i]
                x_ptr + b * stride_xb + t[:, None] * stride_xt + cols[None, :] * stride_xi,
                mask=(t[:, None] < seq) & (cols[None, :] < d_in),
                other=0.0,
            )
            grad += tl.dot(delta_t, x_t, input_precision="ieee")
        total += grad * grad
    out_ptrs = out_ptr + rows[:, None] * stride_oo + cols[None, :] * stride_oi
    out_mask = (rows[:, None] < d_out) & (cols[None, :] < d_in)
    tl.store(out_ptrs, tl.load(out_ptrs, mask=out_mask, other=0.0) + total, mask=out_mask)


def triton_squared_grad_sum(
    delta: Tensor, x: Tensor, out: Tensor, block_o: int = 32, block_i: int = 32, block_t: int = 16
) -> Tensor:
    """out += sum_b (delta_b^T x_b)^2 elementwise, fused; returns `out`.

    `delta`: [batch, seq, d_out]; `x`: [batch, seq, d_in] (zero at tokens that must not count);
    `out`: [d_out, d_in] fp32, updated in place. Blocks must be powers of two, at least 16.
    """
    if delta.dim() != 3 or x.dim() != 3 or delta.shape[:2] != x.shape[:2]:
        raise InputError(
            f"delta [batch, seq, d_out] and x [batch, seq, d_in] must share batch and seq, "
            f"got {tuple(delta.shape)} and {tuple(x.shape)}"
        )
    if out.dtype != torch.float32 or out.shape != (delta.shape[2], x.shape[2]):
        raise InputError(
            f"out must be fp32 of shape {(delta.shape[2], x.shape[2])}, got {out.dtype} {tuple(out.shape)}"
        )
    if not out.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise InputError("CPU tensors need the Triton interpreter: set TRITON_INTERPRET=1 before import")
    for name, block in (("block_o", block_o), ("block_i", block_i), ("block_t", block_t)):
        if block < 16 or block & (block - 1):
            raise InputError(f"{name} must be a power of two >= 16 (tl.dot's minimum), got {block}")
    delta, x = delta.float(), x.float()
    n_samples, seq, d_out = delta.shape
    d_in = x.shape[2]
    grid = (triton.cdiv(d_out, block_o), triton.cdiv(d_in, block_i))
    _squared_grad_sum_kernel[grid](
        delta,
        x,
        out,
        n_samples,
        seq,
        d_out,
        d_in,
        *delta.stride(),
        *x.stride(),
        *out.stride(),
        block_o=block_o,
        block_i=block_i,
        block_t=block_t,
    )
    return out
