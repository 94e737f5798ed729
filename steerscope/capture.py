"""Capture: run prompts (batched, left-padded) and return activations at sites.

Built on `intervene` with edits that only record, so capture sees exactly what edits see.
The result carries the real-token mask, absolute positions and token ids, so nothing
downstream re-derives padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerscope.errors import InputError
from steerscope.intervene import intervene, module_at
from steerscope.model import Model, ModelLike, as_model
from steerscope.offload import input_device
from steerscope.sites import SITE_KINDS, Site, resolve_sites
from steerscope.tokens import TokenInfo

Reduction = Literal["last", "mean"] | None
REDUCTIONS = (None, "last", "mean")


@dataclass
class Capture:
    """Activations by site string, with the token mask, positions and ids of every prompt.

    Without a reduction, activations are [n_prompts, pos, ...] left-padded to the longest
    prompt; `mask` [n_prompts, pos] marks real tokens. With `reduce="last"` or `"mean"` the
    position axis is gone ([n_prompts, ...]); attention patterns keep their key axis.
    """

    activations: dict[str, Tensor]
    mask: Tensor
    positions: Tensor
    token_ids: Tensor
    reduce: Reduction = None
    next_token_logits: Tensor | None = None  # [n_prompts, vocab] fp32, when asked for

    def __getitem__(self, site: str | Site) -> Tensor:
        key = str(Site.parse(site))
        if key not in self.activations:
            raise InputError(f"site {key} was not captured; captured: {', '.join(self.activations)}")
        return self.activations[key]


def prompt_list(prompts: Sequence[str], name: str = "prompts") -> list[str]:
    """`prompts` as a list, checked: a non-empty sequence of strings (a lone string is not one)."""
    if isinstance(prompts, str) or not isinstance(prompts, Sequence):
        raise InputError(f"{name} must be a list of strings, got {type(prompts).__name__}")
    if not all(isinstance(p, str) for p in prompts):
        raise InputError(f"{name} must be a list of strings, got an item that is not a string")
    if not prompts:
        raise InputError(f"{name} is empty; at least one is needed")
    return list(prompts)


def tokenize(model: Model, prompts: Sequence[str]) -> dict[str, Tensor]:
    """Left-padded input ids, attention mask and matching position ids for a batch of prompts."""
    prompts = prompt_list(prompts)
    if model.tokenizer is None:
        raise InputError("this model has no tokenizer; pass tokenizer= to load()")
    encoded = model.tokenizer(list(prompts), return_tensors="pt", padding=True, padding_side="left")
    mask = encoded["attention_mask"]
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
    }


def tokenize_for_generate(model: Model, prompts: Sequence[str]) -> dict[str, Tensor]:
    """Left-padded `input_ids` and `attention_mask` [batch, seq] for `model.generate(**inputs)`.

    No position ids: `generate` derives them from the mask at every step, and a fixed prompt-length
    tensor would not match the generated tokens. On the device of the model's first weights (a
    dispatched model's embedding)."""
    batch = tokenize(model, prompts)
    del batch["position_ids"]
    device = input_device(model.hf)
    return {name: tensor.to(device) for name, tensor in batch.items()}


def _position_axis(site: Site) -> int:
    """Axis of token positions (queries, for patterns) in a site's activation (`SITE_KINDS`)."""
    return SITE_KINDS[site.kind].query_axis(headed=site.head is not None)


def _reduce(act: Tensor, site: Site, tokens: TokenInfo, how: Reduction) -> Tensor:
    if how is None:
        return act
    axis = _position_axis(site)
    moved = act.movedim(axis, 1)
    if how == "last":
        last = tokens.is_last_prompt.float().argmax(dim=1)
        return moved[torch.arange(moved.shape[0]), last]
    weights = tokens.is_real.to(act.dtype)
    weights = weights.view(*weights.shape, *([1] * (moved.dim() - 2)))
    return (moved * weights).sum(1) / weights.sum(1).clamp(min=1)


def _pad_left(parts: list[Tensor], site: Site, reduced: bool) -> Tensor:
    """Concatenate batches, left-padding position axes (and the key axis of patterns) with 0."""
    axes = [] if reduced else [_position_axis(site)]
    if SITE_KINDS[site.kind].key_axis_last:
        axes.append(-1)
    if not axes:
        return torch.cat(parts)
    target = {a: max(p.shape[a] for p in parts) for a in axes}
    padded = []
    for part in parts:
        for axis, size in target.items():
            missing = size - part.shape[axis]
            if missing:
                pad = [0, 0] * (part.dim() - 1 - (axis % part.dim())) + [missing, 0]
                part = F.pad(part, pad)
        padded.append(part)
    return torch.cat(padded)


@contextmanager
def _attention_implementation(hf: nn.Module, needed: str | None) -> Iterator[None]:
    """Switch the attention implementation for a block (patterns need eager) and switch back."""
    previous = getattr(hf.config, "_attn_implementation", None)
    if needed is None or previous == needed:
        yield
        return
    hf.set_attn_implementation(needed)
    try:
        yield
    finally:
        hf.set_attn_implementation(previous)


class _StopForward(Exception):
    """Raised after the deepest captured layer: nothing later is needed."""


@contextmanager
def _stop_after(module: nn.Module) -> Iterator[None]:
    def hook(module: nn.Module, args: tuple, output: Any) -> None:
        raise _StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def capture(
    model: ModelLike,
    prompts: Sequence[str],
    sites: str | Site | Sequence[str | Site],
    reduce: Reduction = None,
    batch_size: int = 8,
    progress: bool = True,
    next_token_logits: bool = False,
) -> Capture:
    """Run `prompts` through `model` and return the activations at `sites`, in fp32.

    `reduce="last"` keeps the last prompt token, `"mean"` averages over real tokens. A bf16 or
    fp16 model's activations are cast up (exactly) before any reduction, so means, probe fits and
    every other statistic downstream accumulate in fp32. `next_token_logits`: run the whole model
    (not only up to the deepest site) and keep the logits after each prompt, from the same forward.
    """
    prompts = prompt_list(prompts)
    if reduce not in REDUCTIONS:
        raise InputError(f"unknown reduce {reduce!r}; valid: {', '.join(map(repr, REDUCTIONS))}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    loaded = as_model(model)
    targets = resolve_sites(sites, loaded.anatomy)
    parts: dict[Site, list[Tensor]] = {site: [] for site in targets}
    masks, positions, ids = [], [], []

    def recorder(site: Site):
        def record(act: Tensor, tokens: TokenInfo) -> None:
            parts[site].append(_reduce(act.detach().float(), site, tokens, reduce).cpu())

        return record

    starts = range(0, len(prompts), batch_size)
    needs_eager = any(SITE_KINDS[site.kind].hook == "probabilities" for site in targets)
    device = input_device(loaded.hf)
    logits: list[Tensor] = []
    # Without logits, run the decoder stack only (no unembedding) and stop after the deepest site.
    decoder = module_at(loaded.hf, loaded.anatomy.family.decoder)
    deepest = module_at(loaded.hf, loaded.anatomy.layer_path(max(site.layer for site in targets)))
    with (
        _attention_implementation(loaded.hf, "eager" if needs_eager else None),
        intervene(loaded, {site: recorder(site) for site in targets}),
        nullcontext() if next_token_logits else _stop_after(deepest),
    ):
        for start in tqdm(starts, desc="capture", disable=not progress or len(starts) < 2, leave=False):
            batch = tokenize(loaded, prompts[start : start + batch_size])
            inputs = {k: v.to(device) for k, v in batch.items()}
            if next_token_logits:
                out = loaded.hf(**inputs, use_cache=False, logits_to_keep=1)
                logits.append(out.logits[:, -1].float().cpu())  # left padding: every row ends here
            else:
                try:
                    decoder(**inputs, use_cache=False)
                except _StopForward:
                    pass
            masks.append(batch["attention_mask"].bool())
            positions.append(batch["position_ids"].masked_fill(~masks[-1], -1))
            ids.append(batch["input_ids"])

    width = max(m.shape[1] for m in masks)

    def stack(rows: list[Tensor], fill: int) -> Tensor:
        return torch.cat([F.pad(r, (width - r.shape[1], 0), value=fill) for r in rows])

    return Capture(
        activations={str(s): _pad_left(p, s, reduce is not None) for s, p in parts.items()},
        mask=stack(masks, 0).bool(),
        positions=stack(positions, -1),
        token_ids=stack(ids, loaded.tokenizer.pad_token_id or 0),
        reduce=reduce,
        next_token_logits=torch.cat(logits) if next_token_logits else None,
    )
