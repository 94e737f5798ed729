"""Additive position/semantic decomposition of attention logits (Han & Ji 2025, arXiv 2503.13305).

Han & Ji report that pre-softmax attention logits correlate at r = 0.959 with the sum of a
positional-relevance term and a semantic-importance term. This module measures that on any
supported model:

- `real_logits`: the causal pre-softmax logits w(i, j) = q_rope_i . k_rope_j * scaling of every
  layer and head, for real tokens only, j <= i and, on sliding-window layers, i - j < window
  (the model's own mask: `kv_idx > q_idx - sliding_window`). A logit soft-cap, if the model has
  one, is applied as the model does; Gemma 3 has none.
- `fit_additive`: least squares of w(i, j) ~ a(i - j) + b(i) + c(j). a is a function of the
  distance only; b(i) absorbs each query's softmax-invariant offset; c(j) is the key's
  (token's) importance. By default a is shared by all prompts of a head and b, c are per
  (prompt, position): the positional term is then a property of the head, not re-fitted per
  text. `share_distance=False` fits a per prompt instead.
- `virtual_distance_logits`: for each query i, the table q_i . R_d k_j over a grid of virtual
  distances d (rotating the pre-RoPE key by d * theta), fitted by f(d) + g(j) per query.
- `randomly_initialised`: the same architecture with fresh weights; the paper says the additive
  pattern is learned.

Data in, data out: nothing here plots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.anatomy import anatomy_of
from steerscope.capture import Capture, capture
from steerscope.errors import InputError
from steerscope.intervene import module_at
from steerscope.model import Model, ModelLike, as_model
from steerscope.rotary import pair_frequencies

PAPER_R = 0.959  # Han & Ji 2025, abstract
_RTOL = 1e-9  # relative cut-off of the pseudo-inverses: the additive design is rank-deficient


@dataclass(frozen=True)
class LayerAttention:
    """What turns one layer's q/k into pre-softmax logits.

    `inv_freq` [head_dim/2] are the rotary frequencies theta_i; `rope_scale` multiplies cos and
    sin (1 for default RoPE); `group` query heads share one KV head (GQA: head h reads h // group).
    """

    layer: int
    scaling: float
    window: int | None
    softcap: float | None
    inv_freq: Tensor
    rope_scale: float
    group: int


def attention_layers(model: ModelLike) -> list[LayerAttention]:
    """Scaling, sliding window, soft-cap and rotary frequencies of every layer, read from the model.

    The scaling is the attention module's `scaling` (Gemma 3: query_pre_attn_scalar^-0.5). The
    window is the module's `sliding_window` (Gemma 3, Qwen: None on full-attention layers), else
    the config's (Mistral). Frequencies come from the model's rotary module when it has them
    (covers scaled RoPE variants), else from the layer's base.
    """
    loaded = as_model(model)
    anatomy = loaded.anatomy
    try:
        rotary = module_at(loaded.hf, f"{anatomy.family.decoder}.rotary_emb")
    except AttributeError:
        rotary = None
    layers = []
    for layer in range(anatomy.n_layers):
        attn = module_at(loaded.hf, anatomy.component_path(layer, anatomy.family.attention))
        if hasattr(attn, "sliding_window"):
            window = attn.sliding_window
        else:
            window = getattr(attn.config, "sliding_window", None)
        layer_type = anatomy.layer_types[layer]
        inv_freq = getattr(rotary, f"{layer_type}_inv_freq", None)
        if inv_freq is None:
            inv_freq = getattr(rotary, "inv_freq", None)
        if inv_freq is None:
            inv_freq = pair_frequencies(anatomy.rope_bases[layer], anatomy.head_dim)
        scale = getattr(rotary, f"{layer_type}_attention_scaling", None)
        if scale is None:
            scale = getattr(rotary, "attention_scaling", 1.0)
        layers.append(
            LayerAttention(
                layer=layer,
                scaling=float(getattr(attn, "scaling", anatomy.head_dim**-0.5)),
                window=int(window) if window else None,
                softcap=getattr(attn, "attn_logit_softcapping", None),
                inv_freq=inv_freq.detach().to("cpu", torch.float64),
                rope_scale=float(scale),
                group=anatomy.n_heads // anatomy.n_kv_heads,
            )
        )
    return layers


def causal_allowed(n: int, window: int | None = None) -> Tensor:
    """[n, n] bool: key j is visible from query i (j <= i and, with a window, i - j < window)."""
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    allowed = j <= i
    if window is not None:
        allowed &= i - j < window
    return allowed


def _softcap(logits: Tensor, cap: float | None) -> Tensor:
    return logits if cap is None else torch.tanh(logits / cap) * cap


def pre_softmax_logits(q_rope: Tensor, k_rope: Tensor, layer: LayerAttention) -> Tensor:
    """Causal pre-softmax logits of one prompt: q_rope [n, head, d], k_rope [n, kv_head, d] ->
    [head, n, n] (query, key), float64, -inf where the layer's mask hides the key."""
    keys = k_rope.double().repeat_interleave(layer.group, dim=1)  # [n, head, d]
    logits = torch.einsum("ihd,jhd->hij", q_rope.double(), keys) * layer.scaling
    logits = _softcap(logits, layer.softcap)
    return logits.masked_fill(~causal_allowed(q_rope.shape[0], layer.window), -math.inf)


def virtual_distance_logits(q: Tensor, k: Tensor, layer: LayerAttention, distances: Sequence[int]) -> Tensor:
    """Logits at virtual distances: q [n, head, d], k [n, kv_head, d] (pre-RoPE) ->
    [head, query, distance, key] float64.

    Entry (h, i, t, j) is q_i . R_{d_t} k_j * scaling, the logit query i would give key j if
    they sat d_t positions apart (RoPE makes it depend on the distance only). Per rotary pair
    m (dims m, m + d/2): q . R(-d theta_m) k = cos(d theta_m) (q1 k1 + q2 k2)
    + sin(d theta_m) (q1 k2 - q2 k1). At d = i - j it equals the real logit.
    """
    half = q.shape[-1] // 2
    q = q.double()
    k = k.double().repeat_interleave(layer.group, dim=1)
    q1, q2, k1, k2 = q[..., :half], q[..., half:], k[..., :half], k[..., half:]
    same = torch.einsum("ihm,jhm->hijm", q1, k1) + torch.einsum("ihm,jhm->hijm", q2, k2)
    cross = torch.einsum("ihm,jhm->hijm", q1, k2) - torch.einsum("ihm,jhm->hijm", q2, k1)
    angles = torch.as_tensor(distances, dtype=torch.float64)[:, None] * layer.inv_freq[None, :]
    table = torch.einsum("hijm,tm->hitj", same, angles.cos()) + torch.einsum(
        "hijm,tm->hitj", cross, angles.sin()
    )
    return _softcap(table * layer.scaling * layer.rope_scale**2, layer.softcap)


def two_way_fit(table: Tensor) -> Tensor:
    """Least-squares fit of f(d) + g(j) to a complete table [..., distance, key], per leading
    index: row mean + column mean - grand mean (the closed form of two-way additive ANOVA)."""
    rows = table.mean(-1, keepdim=True)
    cols = table.mean(-2, keepdim=True)
    return rows + cols - table.mean((-2, -1), keepdim=True)


def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson r along dim 0: x, y [n, ...] -> [...]."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    return (x * y).sum(0) / (x.square().sum(0).sqrt() * y.square().sum(0).sqrt()).clamp_min(1e-300)


@dataclass
class AdditiveFit:
    """w(i, j) ~ a(i - j) + b(i) + c(j), fitted for T targets (e.g. heads) over P prompts.

    `fitted[p]` [T, n_p, n_p] (0 where not observed); `distance` a [T, D] (shared) or
    [P, T, D]; `query` b and `key` c: per prompt [T, n_p]. The components are the minimum-norm
    solution: a constant and a linear trend can move between a, b and c
    (a(d) + s d, b(i) - s i, c(j) + s j give the same sum), the fitted values cannot.
    `r` [T]: Pearson r of fitted against real over every observed cell of every prompt;
    `r_within_query` [T]: the same after removing each query row's mean from both (only what
    survives the softmax). `dof`: rank of the design, for noise checks.
    """

    fitted: list[Tensor]
    distance: Tensor
    query: list[Tensor]
    key: list[Tensor]
    r: Tensor
    r_within_query: Tensor
    dof: int
    n_observed: int
    shared: bool = True


@dataclass
class _Design:
    """Indicator design of one prompt's observed cells: A = one-hot(i - j) [K, D],
    B = [one-hot(i), one-hot(j)] [K, 2n], B's pseudo-inverse, and A'MA with M = I - B B^+."""

    rows: Tensor
    cols: Tensor
    a_onehot: Tensor
    b_onehot: Tensor
    b_pinv: Tensor
    gram: Tensor
    rank_b: int


def _design(allowed: Tensor, n_distances: int) -> _Design:
    rows, cols = allowed.nonzero(as_tuple=True)
    n = allowed.shape[0]
    k = rows.numel()
    a_onehot = torch.zeros(k, n_distances, dtype=torch.float64)
    a_onehot[torch.arange(k), rows - cols] = 1.0
    b_onehot = torch.zeros(k, 2 * n, dtype=torch.float64)
    b_onehot[torch.arange(k), rows] = 1.0
    b_onehot[torch.arange(k), n + cols] = 1.0
    b_pinv = torch.linalg.pinv(b_onehot, rtol=_RTOL)
    m_a = a_onehot - b_onehot @ (b_pinv @ a_onehot)
    rank_b = round(torch.trace(b_pinv @ b_onehot).item())
    return _Design(rows, cols, a_onehot, b_onehot, b_pinv, a_onehot.T @ m_a, rank_b)


def fit_additive(
    logits: Sequence[Tensor], allowed: Sequence[Tensor], share_distance: bool = True
) -> AdditiveFit:
    """Fit a(i - j) + b(i) + c(j) to logits[p] [T, n_p, n_p] on cells allowed[p] [n_p, n_p].

    Exact least squares by profiling: for fixed a, the best b, c of a prompt are a projection
    onto its position indicators B_p, so a solves (sum_p A_p' M_p A_p) a = sum_p A_p' M_p y_p with
    M_p = I - B_p B_p^+; then b, c = B_p^+ (y_p - A_p a). Each prompt costs one pseudo-inverse of
    a [n_p (n_p + 1) / 2, 2 n_p] 0/1 matrix, shared by all T targets (a 64-token prompt: 2080 x 128).
    With `share_distance=False`, a is solved per prompt from that prompt's terms alone.
    """
    if len(logits) != len(allowed) or not logits:
        raise InputError(f"need matching, non-empty logits and masks; got {len(logits)} and {len(allowed)}")
    n_distances = max(m.shape[0] for m in allowed)
    designs, targets = [], []
    cache: dict[bytes, _Design] = {}
    for values, mask in zip(logits, allowed, strict=True):
        if values.shape[-2:] != mask.shape:
            raise InputError(f"logits {tuple(values.shape)} do not match mask {tuple(mask.shape)}")
        key = bytes(str(mask.shape[0]), "ascii") + mask.numpy().tobytes()
        if key not in cache:
            cache[key] = _design(mask, n_distances)
        design = cache[key]
        designs.append(design)
        targets.append(values[:, design.rows, design.cols].double().T)  # [K, T]
    profiled = [y - d.b_onehot @ (d.b_pinv @ y) for d, y in zip(designs, targets, strict=True)]
    moments = [d.a_onehot.T @ my for d, my in zip(designs, profiled, strict=True)]  # [D, T]
    if share_distance:
        gram = sum(d.gram for d in designs)
        gram_pinv = torch.linalg.pinv(gram, rtol=_RTOL, hermitian=True)
        distance = gram_pinv @ sum(moments)  # [D, T]
        per_prompt = [distance] * len(designs)
        dof = sum(d.rank_b for d in designs) + round(torch.trace(gram_pinv @ gram).item())
    else:
        per_prompt, dof = [], 0
        for d, h in zip(designs, moments, strict=True):
            gram_pinv = torch.linalg.pinv(d.gram, rtol=_RTOL, hermitian=True)
            per_prompt.append(gram_pinv @ h)
            dof += d.rank_b + round(torch.trace(gram_pinv @ d.gram).item())
        distance = torch.stack(per_prompt)
    fitted, queries, keys, flat_real, flat_fit, row_real, row_fit = [], [], [], [], [], [], []
    for values, d, y, a in zip(logits, designs, targets, per_prompt, strict=True):
        n = values.shape[-1]
        theta = d.b_pinv @ (y - d.a_onehot @ a)  # [2n, T]
        y_hat = d.a_onehot @ a + d.b_onehot @ theta
        full = torch.zeros(y.shape[1], n, n, dtype=torch.float64)
        full[:, d.rows, d.cols] = y_hat.T
        fitted.append(full)
        queries.append(theta[:n].T)
        keys.append(theta[n:].T)
        flat_real.append(y)
        flat_fit.append(y_hat)
        row_real.append(y - _row_means(y, d.rows, n))
        row_fit.append(y_hat - _row_means(y_hat, d.rows, n))
    return AdditiveFit(
        fitted=fitted,
        distance=distance.T if share_distance else distance.transpose(1, 2),
        query=queries,
        key=keys,
        r=pearson(torch.cat(flat_fit), torch.cat(flat_real)),
        r_within_query=pearson(torch.cat(row_fit), torch.cat(row_real)),
        dof=dof,
        n_observed=sum(y.shape[0] for y in targets),
        shared=share_distance,
    )


def _row_means(y: Tensor, rows: Tensor, n: int) -> Tensor:
    """Mean of y [K, T] over the cells of each query row, broadcast back to the cells."""
    sums = torch.zeros(n, y.shape[1], dtype=y.dtype).index_add_(0, rows, y)
    counts = torch.bincount(rows, minlength=n).clamp_min(1).to(y.dtype)
    return (sums / counts[:, None])[rows]


@dataclass
class PositionLogits:
    """Per layer and head: r of the additive fit on real logits, within-query r, and r of the
    virtual-distance fit; plus the real and fitted logits of every prompt for plotting.

    `r`, `r_within_query`, `virtual_r`: [n_layers, n_heads] (rows follow `layers`).
    `logits[layer][p]` and `fitted[layer][p]`: [n_heads, n_p, n_p], with `allowed[layer][p]`
    [n_p, n_p]. `dof[layer]`: rank of the additive design of the fit that layer was part of.
    """

    layers: list[int]
    r: Tensor
    r_within_query: Tensor
    virtual_r: Tensor
    logits: dict[int, list[Tensor]] = field(repr=False)
    fitted: dict[int, list[Tensor]] = field(repr=False)
    allowed: dict[int, list[Tensor]] = field(repr=False)
    distances: list[int]
    lengths: list[int]
    dof: dict[int, int]

    def points(self, layer: int, head: int) -> tuple[Tensor, Tensor]:
        """Real and fitted logits [n_cells] of one head over every observed cell of every prompt."""
        cells = zip(self.logits[layer], self.fitted[layer], self.allowed[layer], strict=True)
        real, fit = zip(
            *((values[head][mask], fitted[head][mask]) for values, fitted, mask in cells), strict=True
        )
        return torch.cat(real), torch.cat(fit)


def _per_prompt(acts: Tensor, mask: Tensor) -> list[Tensor]:
    """Split left-padded [batch, pos, ...] into real-token tensors [n_p, ...]."""
    return [row[keep] for row, keep in zip(acts, mask, strict=True)]


def logits_from_capture(
    acts: Capture, geometry: Sequence[LayerAttention], layers: Sequence[int]
) -> tuple[dict[int, list[Tensor]], dict[int, list[Tensor]]]:
    """Pre-softmax logits of every captured prompt from its `L<layer>.q_rope`/`k_rope` sites:
    ({layer: [[head, n_p, n_p]]}, {layer: [allowed [n_p, n_p]]}), -inf where hidden."""
    logits, allowed = {}, {}
    for layer in layers:
        qs = _per_prompt(acts[f"L{layer}.q_rope"], acts.mask)
        ks = _per_prompt(acts[f"L{layer}.k_rope"], acts.mask)
        logits[layer] = [pre_softmax_logits(q, k, geometry[layer]) for q, k in zip(qs, ks, strict=True)]
        allowed[layer] = [causal_allowed(q.shape[0], geometry[layer].window) for q in qs]
    return logits, allowed


def real_logits(
    model: ModelLike, prompts: Sequence[str], layers: Sequence[int] | None = None, batch_size: int = 8
) -> tuple[dict[int, list[Tensor]], dict[int, list[Tensor]]]:
    """Causal pre-softmax logits of every prompt at `layers` (default all), from captured q/k
    after RoPE: ({layer: [[head, n_p, n_p]]}, {layer: [allowed [n_p, n_p]]})."""
    loaded = as_model(model)
    layers = list(range(loaded.anatomy.n_layers)) if layers is None else list(layers)
    sites = [f"L{layer}.{kind}" for layer in layers for kind in ("q_rope", "k_rope")]
    acts = capture(loaded, prompts, sites, batch_size=batch_size, progress=False)
    return logits_from_capture(acts, attention_layers(loaded), layers)


def _virtual_r(acts: Capture, layer: LayerAttention, distances: Sequence[int]) -> Tensor:
    """r [head] of the per-query f(d) + g(j) fit over all prompts' virtual-distance tables."""
    tables, fits = [], []
    qs = _per_prompt(acts[f"L{layer.layer}.q"], acts.mask)
    ks = _per_prompt(acts[f"L{layer.layer}.k"], acts.mask)
    for q, k in zip(qs, ks, strict=True):
        table = virtual_distance_logits(q, k, layer, distances)  # [head, i, D, j]
        tables.append(table.flatten(1).T)
        fits.append(two_way_fit(table).flatten(1).T)
    return pearson(torch.cat(fits), torch.cat(tables))


def position_logits(
    model: ModelLike,
    prompts: Sequence[str],
    layers: Sequence[int] | None = None,
    distances: Sequence[int] = tuple(range(0, 64, 2)),
    share_distance: bool = True,
    batch_size: int = 8,
    progress: bool = False,
) -> PositionLogits:
    """Real-logit additive fits and virtual-distance fits for every layer and head.

    Layers whose masks coincide on these prompts (no window, or a window longer than every
    prompt) are fitted together, so each prompt's design is factorised once per mask. The
    virtual table of a query covers all real keys of its prompt (including later ones: the
    distance is virtual) and every distance in `distances`, ignoring any sliding window; its r
    is pooled over all queries and prompts, each query with its own f and g. `progress`: bars
    over the capture's batches and the fits.
    """
    loaded = as_model(model)
    layers = list(range(loaded.anatomy.n_layers)) if layers is None else list(layers)
    geometry = attention_layers(loaded)
    sites = [f"L{layer}.{kind}" for layer in layers for kind in ("q", "k", "q_rope", "k_rope")]
    acts = capture(loaded, prompts, sites, batch_size=batch_size, progress=progress)
    logits, allowed = logits_from_capture(acts, geometry, layers)
    lengths = [int(n) for n in acts.mask.sum(1)]
    n_heads = loaded.anatomy.n_heads
    groups: dict[int | None, list[int]] = {}
    for layer in layers:
        window = geometry[layer].window
        groups.setdefault(window if window is not None and window < max(lengths) else None, []).append(layer)
    r = torch.zeros(len(layers), n_heads, dtype=torch.float64)
    r_within, virtual_r = torch.zeros_like(r), torch.zeros_like(r)
    fitted, dof = {}, {}
    bar = tqdm(total=len(groups) + len(layers), desc="fits", disable=not progress, leave=False)
    for members in groups.values():
        stacked = [torch.cat([logits[layer][p] for layer in members]) for p in range(len(prompts))]
        fit = fit_additive(stacked, allowed[members[0]], share_distance)
        for slot, layer in enumerate(members):
            heads = slice(slot * n_heads, (slot + 1) * n_heads)
            fitted[layer] = [full[heads] for full in fit.fitted]
            r[layers.index(layer)] = fit.r[heads]
            r_within[layers.index(layer)] = fit.r_within_query[heads]
            dof[layer] = fit.dof
        bar.update()
    for row, layer in enumerate(layers):
        virtual_r[row] = _virtual_r(acts, geometry[layer], distances)
        bar.update()
    bar.close()
    return PositionLogits(
        layers=layers,
        r=r,
        r_within_query=r_within,
        virtual_r=virtual_r,
        logits=logits,
        fitted=fitted,
        allowed=allowed,
        distances=list(distances),
        lengths=lengths,
        dof=dof,
    )


def randomly_initialised(model: ModelLike, seed: int = 0) -> Model:
    """A fresh model of the same config (eval mode) sharing the tokenizer; the global RNG is left
    as it was."""
    from transformers import AutoModelForCausalLM

    loaded = as_model(model)
    dtype = next(loaded.hf.parameters()).dtype
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(loaded.hf.config, dtype=dtype)
    hf.eval()
    return Model(
        hf=hf, tokenizer=loaded.tokenizer, anatomy=anatomy_of(hf), source=f"random init of {loaded.source}"
    )
