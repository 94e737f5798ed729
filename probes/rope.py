"""Rotary-pair statistics of post-RoPE queries and keys, their angle to the BOS key, and BOS attention.

Pair i of a head is dims (i, i + head_dim/2) and turns at theta_i = base^(-2i/head_dim), with the
layer's own base (Gemma 3 mixes 10k local and 1M global bases). Following Jin et al. 2025
("Massive values in self-attention modules are the key to contextual knowledge understanding"),
the size of a dimension is its L2 norm over the real tokens of a prompt set, and a pair is
"massive" when its norm exceeds lambda times the mean pair norm of its head.

`RotaryStats` keeps sums over tokens (not means), so prompt batches merge with `+` and memory
stays at one batch of activations. Everything here takes tensors and returns tensors or
JSON-able values; plotting lives with the experiment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.capture import Capture, capture
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.rotary import fold_pairs, pair_frequencies

#: Jin et al. 2025: a pair is massive above this multiple of its head's mean pair norm.
DEFAULT_LAMBDA = 5.0
_EPS = 1e-12


# --- per-tensor maths ---------------------------------------------------------------------------


def dimension_square_sums(act: Tensor, mask: Tensor) -> Tensor:
    """Sum over real tokens of each dimension squared: [batch, pos, head, head_dim] -> [head, head_dim].

    `mask` [batch, pos] marks real tokens; sums in float64 so many batches add up exactly enough.
    """
    weights = mask.to(torch.float64)[:, :, None, None]
    return (act.to(torch.float64) ** 2 * weights).sum(dim=(0, 1))


def massive_pairs(pair_norms: Tensor, lam: float = DEFAULT_LAMBDA) -> Tensor:
    """Pairs whose norm exceeds `lam` times the mean pair norm of their head: [..., pairs] -> bool [..., pairs]."""
    if lam <= 0:
        raise InputError(f"lam must be positive, got {lam}")
    return pair_norms > lam * pair_norms.mean(dim=-1, keepdim=True)


def pair_cosines(q: Tensor, k: Tensor) -> Tensor:
    """Cosine of the angle between q and k within each rotary pair: [..., head_dim] x2 -> [..., head_dim/2].

    A pair is a 2-D vector (x_i, x_{i+half}); a zero pair gives cosine 0.
    """
    half = q.shape[-1] // 2
    q1, q2, k1, k2 = q[..., :half], q[..., half:], k[..., :half], k[..., half:]
    dot = q1 * k1 + q2 * k2
    norms = torch.sqrt((q1**2 + q2**2) * (k1**2 + k2**2))
    return dot / norms.clamp(min=_EPS)


def vector_cosines(q: Tensor, k: Tensor) -> Tensor:
    """Cosine of the angle between whole head vectors: [..., head_dim] x2 -> [...]."""
    dot = (q * k).sum(-1)
    return dot / (q.norm(dim=-1) * k.norm(dim=-1)).clamp(min=_EPS)


def bos_index(positions: Tensor) -> Tensor:
    """Column of each row's first real token (position 0), under left padding: [batch, pos] -> [batch]."""
    first = positions == 0
    if not bool(first.any(dim=1).all()):
        raise InputError("every row needs a real token at position 0")
    return first.long().argmax(dim=1)


def query_mask(positions: Tensor) -> Tensor:
    """Real tokens other than the first of each row (queries that can look back at BOS): bool [batch, pos]."""
    return positions > 0


def bos_alignment_sums(q_rope: Tensor, k_rope: Tensor, positions: Tensor) -> tuple[Tensor, Tensor, int]:
    """Sums over query tokens of cos(q_t, k_BOS), whole-vector and per pair, and the token count.

    `q_rope` [batch, pos, head, head_dim], `k_rope` [batch, pos, kv_head, head_dim], `positions`
    [batch, pos] (pads -1). Query head h reads KV head h // (head / kv_head), as in grouped-query
    attention. Queries are the real tokens after the first. Returns ([head], [head, head_dim/2], n).
    """
    batch, _, n_heads, _ = q_rope.shape
    group = n_heads // k_rope.shape[2]
    bos_keys = k_rope[torch.arange(batch), bos_index(positions)]  # [batch, kv_head, head_dim]
    bos_keys = bos_keys.repeat_interleave(group, dim=1)[:, None]  # [batch, 1, head, head_dim]
    q, k = q_rope.to(torch.float64), bos_keys.to(torch.float64)
    weights = query_mask(positions).to(torch.float64)
    whole = (vector_cosines(q, k) * weights[:, :, None]).sum(dim=(0, 1))
    per_pair = (pair_cosines(q, k) * weights[:, :, None, None]).sum(dim=(0, 1))
    return whole, per_pair, int(query_mask(positions).sum())


def bos_attention_sums(pattern: Tensor, positions: Tensor) -> tuple[Tensor, int]:
    """Sum over query tokens of the attention probability on each row's BOS key, and the count.

    `pattern` [batch, head, query, key], `positions` [batch, pos] (pads -1). Queries are the real
    tokens after the first (BOS attends only to itself). Returns ([head], n).
    """
    batch = pattern.shape[0]
    on_bos = pattern[torch.arange(batch), :, :, bos_index(positions)]  # [batch, head, query]
    weights = query_mask(positions).to(torch.float64)[:, None, :]
    return (on_bos.to(torch.float64) * weights).sum(dim=(0, 2)), int(query_mask(positions).sum())


# --- accumulated statistics ---------------------------------------------------------------------


@dataclass(frozen=True)
class RotaryStats:
    """Sums over a prompt set, per layer and head, from post-RoPE queries/keys and attention patterns.

    Sums, so batches merge with `+`. Shapes: `q_dim_sq` [layer, head, head_dim], `k_dim_sq`
    [layer, kv_head, head_dim], `bos_cos_sum` and `bos_attention_sum` [layer, head],
    `bos_pair_cos_sum` [layer, head, pair]. `layers` are the model's layer indices of axis 0.
    """

    q_dim_sq: Tensor
    k_dim_sq: Tensor
    bos_cos_sum: Tensor
    bos_pair_cos_sum: Tensor
    bos_attention_sum: Tensor
    n_tokens: int
    n_queries: int
    layers: tuple[int, ...]
    layer_types: tuple[str, ...]
    rope_bases: tuple[float, ...]

    def __add__(self, other: RotaryStats) -> RotaryStats:
        if (self.layers, self.rope_bases) != (other.layers, other.rope_bases):
            raise InputError("can only add statistics of the same layers of the same model")
        summed = {
            f.name: getattr(self, f.name) + getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("layers", "layer_types", "rope_bases")
        }
        return RotaryStats(
            **summed, layers=self.layers, layer_types=self.layer_types, rope_bases=self.rope_bases
        )

    @property
    def head_dim(self) -> int:
        return self.q_dim_sq.shape[-1]

    @property
    def q_dim_norm(self) -> Tensor:
        """L2 norm over real tokens of each query dimension [layer, head, head_dim]."""
        return self.q_dim_sq.sqrt()

    @property
    def k_dim_norm(self) -> Tensor:
        """L2 norm over real tokens of each key dimension [layer, kv_head, head_dim]."""
        return self.k_dim_sq.sqrt()

    @property
    def q_pair_norm(self) -> Tensor:
        """L2 norm over real tokens of each query rotary pair (rotation-invariant) [layer, head, pair]."""
        return fold_pairs(self.q_dim_sq).sqrt()

    @property
    def k_pair_norm(self) -> Tensor:
        """L2 norm over real tokens of each key rotary pair [layer, kv_head, pair]."""
        return fold_pairs(self.k_dim_sq).sqrt()

    @property
    def frequencies(self) -> Tensor:
        """theta_i = base^(-2i/head_dim) with each layer's own base [layer, pair] (float64)."""
        return torch.stack([pair_frequencies(base, self.head_dim) for base in self.rope_bases])

    @property
    def bos_cos(self) -> Tensor:
        """Mean over query tokens of cos(q_t, k_BOS) of whole head vectors [layer, head]."""
        return self.bos_cos_sum / max(self.n_queries, 1)

    @property
    def bos_pair_cos(self) -> Tensor:
        """Mean over query tokens of cos(q_t, k_BOS) within each rotary pair [layer, head, pair]."""
        return self.bos_pair_cos_sum / max(self.n_queries, 1)

    @property
    def bos_attention(self) -> Tensor:
        """Mean over query tokens of the attention probability on the BOS key [layer, head]."""
        return self.bos_attention_sum / max(self.n_queries, 1)


def sites_for(layers: Sequence[int]) -> list[str]:
    """The capture sites the statistics need for `layers`."""
    return [f"L{layer}.{kind}" for layer in layers for kind in ("q_rope", "k_rope", "attn_pattern")]


def stats_from_capture(
    acts: Capture, layers: Sequence[int], layer_types: Sequence[str], rope_bases: Sequence[float]
) -> RotaryStats:
    """`RotaryStats` of one capture holding `sites_for(layers)` without reduction.

    `layer_types` and `rope_bases` are those of `layers` (one entry per layer captured).
    """
    if acts.reduce is not None:
        raise InputError(f"need unreduced activations (reduce=None), got reduce={acts.reduce!r}")
    q_sq, k_sq, cos, pair_cos, attention = [], [], [], [], []
    n_queries = int(query_mask(acts.positions).sum())
    for layer in layers:
        q, k = acts[f"L{layer}.q_rope"], acts[f"L{layer}.k_rope"]
        q_sq.append(dimension_square_sums(q, acts.mask))
        k_sq.append(dimension_square_sums(k, acts.mask))
        whole, per_pair, _ = bos_alignment_sums(q, k, acts.positions)
        cos.append(whole)
        pair_cos.append(per_pair)
        attention.append(bos_attention_sums(acts[f"L{layer}.attn_pattern"], acts.positions)[0])
    return RotaryStats(
        q_dim_sq=torch.stack(q_sq),
        k_dim_sq=torch.stack(k_sq),
        bos_cos_sum=torch.stack(cos),
        bos_pair_cos_sum=torch.stack(pair_cos),
        bos_attention_sum=torch.stack(attention),
        n_tokens=int(acts.mask.sum()),
        n_queries=n_queries,
        layers=tuple(layers),
        layer_types=tuple(layer_types),
        rope_bases=tuple(float(b) for b in rope_bases),
    )


def rotary_stats(
    model: ModelLike,
    prompts: Sequence[str],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> RotaryStats:
    """Pair norms, BOS angles and BOS attention of every layer (or `layers`) over `prompts`.

    One capture pass per batch of `batch_size` prompts, all layers' q_rope, k_rope and
    attn_pattern sites at once (eager attention); only the batch's sums are kept, so memory is
    one batch of activations. The first real token of each prompt is taken as BOS.
    """
    if not prompts:
        raise InputError("prompts is empty")
    loaded = as_model(model)
    anatomy = loaded.anatomy
    layers = list(range(anatomy.n_layers)) if layers is None else list(layers)
    types = [anatomy.layer_types[i] for i in layers]
    bases = [anatomy.rope_bases[i] for i in layers]
    total: RotaryStats | None = None
    for start in tqdm(
        range(0, len(prompts), batch_size), desc="rotary stats", disable=not progress, leave=False
    ):
        chunk = list(prompts[start : start + batch_size])
        acts = capture(loaded, chunk, sites_for(layers), batch_size=len(chunk), progress=False)
        part = stats_from_capture(acts, layers, types, bases)
        total = part if total is None else total + part
    assert total is not None
    return total


# --- comparisons and summaries ------------------------------------------------------------------


@dataclass(frozen=True)
class RotaryChange:
    """after minus before, per layer/head/pair. Shapes as in `RotaryStats`; `*_relative` divides by before."""

    q_pair_norm: Tensor
    k_pair_norm: Tensor
    q_pair_norm_relative: Tensor
    k_pair_norm_relative: Tensor
    bos_cos: Tensor
    bos_pair_cos: Tensor
    bos_attention: Tensor


def stats_change(after: RotaryStats, before: RotaryStats) -> RotaryChange:
    """Per-pair change of `after` relative to `before` (the same prompts, e.g. with a mask applied)."""
    if (after.layers, after.rope_bases, after.n_tokens) != (
        before.layers,
        before.rope_bases,
        before.n_tokens,
    ):
        raise InputError("statistics differ in layers or token count; compare runs on the same prompts")
    dq = after.q_pair_norm - before.q_pair_norm
    dk = after.k_pair_norm - before.k_pair_norm
    return RotaryChange(
        q_pair_norm=dq,
        k_pair_norm=dk,
        q_pair_norm_relative=dq / before.q_pair_norm.clamp(min=_EPS),
        k_pair_norm_relative=dk / before.k_pair_norm.clamp(min=_EPS),
        bos_cos=after.bos_cos - before.bos_cos,
        bos_pair_cos=after.bos_pair_cos - before.bos_pair_cos,
        bos_attention=after.bos_attention - before.bos_attention,
    )


def mean_changes(changes: Sequence[RotaryChange]) -> RotaryChange:
    """Element-wise mean of several changes (e.g. over random-mask seeds)."""
    if not changes:
        raise InputError("changes is empty")
    return RotaryChange(
        **{f.name: torch.stack([getattr(c, f.name) for c in changes]).mean(0) for f in fields(RotaryChange)}
    )


def dominant_pairs(stats: RotaryStats, lam: float = DEFAULT_LAMBDA) -> list[dict[str, Any]]:
    """Massive pairs of every layer and head, with their frequency and norm / head-mean ratio.

    One dict per layer: layer, layer_type, rope_base, and for "q" (query heads) and "k" (KV heads)
    a list per head of {"pairs", "frequencies", "ratios"}, pairs in increasing index (fastest first).
    """
    frequencies = stats.frequencies
    out = []
    for row, layer in enumerate(stats.layers):
        entry: dict[str, Any] = {
            "layer": layer,
            "layer_type": stats.layer_types[row],
            "rope_base": stats.rope_bases[row],
        }
        for name, norms in (("q", stats.q_pair_norm[row]), ("k", stats.k_pair_norm[row])):
            ratios = norms / norms.mean(-1, keepdim=True).clamp(min=_EPS)
            chosen = massive_pairs(norms, lam)
            entry[name] = [
                {
                    "pairs": chosen[h].nonzero().squeeze(1).tolist(),
                    "frequencies": frequencies[row][chosen[h]].tolist(),
                    "ratios": ratios[h][chosen[h]].tolist(),
                }
                for h in range(norms.shape[0])
            ]
        out.append(entry)
    return out


def dominant_frequencies_by_layer_type(stats: RotaryStats, lam: float = DEFAULT_LAMBDA) -> dict[str, Any]:
    """Per layer type: how often each pair index is massive (over layers and heads), q and k.

    {layer_type: {"q": {pair: count}, "k": {pair: count}, "n_layers": int, "rope_base": float}}.
    """
    summary: dict[str, Any] = {}
    for row, kind in enumerate(stats.layer_types):
        entry = summary.setdefault(
            kind, {"q": {}, "k": {}, "n_layers": 0, "rope_base": stats.rope_bases[row]}
        )
        entry["n_layers"] += 1
        for name, norms in (("q", stats.q_pair_norm[row]), ("k", stats.k_pair_norm[row])):
            for pair in massive_pairs(norms, lam).nonzero()[:, 1].tolist():
                entry[name][pair] = entry[name].get(pair, 0) + 1
    for entry in summary.values():
        for name in ("q", "k"):
            entry[name] = dict(sorted(entry[name].items()))
    return summary


def change_summary(
    change: RotaryChange, before: RotaryStats, lam: float = DEFAULT_LAMBDA
) -> dict[str, float]:
    """Mean |change| of pair norms on massive vs other pairs (absolute and relative), q and k,
    and the mean |change| of BOS cosine and BOS attention over layers and heads."""
    out: dict[str, float] = {}
    for name, delta, relative, norms in (
        ("q", change.q_pair_norm, change.q_pair_norm_relative, before.q_pair_norm),
        ("k", change.k_pair_norm, change.k_pair_norm_relative, before.k_pair_norm),
    ):
        massive = massive_pairs(norms, lam)
        for group, selected in (("massive", massive), ("other", ~massive)):
            n = int(selected.sum())
            out[f"{name}_{group}_n"] = n
            out[f"{name}_{group}_abs_change"] = float(delta[selected].abs().mean()) if n else float("nan")
            out[f"{name}_{group}_rel_change"] = float(relative[selected].abs().mean()) if n else float("nan")
    out["bos_cos_abs_change"] = float(change.bos_cos.abs().mean())
    out["bos_pair_cos_abs_change"] = float(change.bos_pair_cos.abs().mean())
    out["bos_attention_abs_change"] = float(change.bos_attention.abs().mean())
    return out
