"""Shared-prefix KV cache: run the tokens every prompt of a batch starts with once, and let each
prompt's own suffix continue from their keys and values.

Few-shot prompts repeat one instruction and the same demonstrations (the arithmetic prompts of
`steerscope.data.arithmetic`: about 280 tokens before each question), so a batch otherwise
recomputes them once per row. The layout is [prefix | left padding | suffix]: the attention mask
hides the pads and the positions count real tokens only, as for a left-padded batch, so a row
sees the same tokens at the same positions. Sliding-window layers measure their window in cache
slots, which the pads in the middle widen; the shared prefix is used only when the whole sequence
(prefix, padded suffixes, generated tokens) fits in the window, where no window cuts anything and
the result equals the plain left-padded batch.
"""

from __future__ import annotations

import copy
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

from steerscope.capture import tokenize_for_generate
from steerscope.intervene import module_at
from steerscope.model import Model
from steerscope.offload import input_device

#: Shorter shared prefixes are not worth an extra forward call.
MIN_PREFIX_TOKENS = 16


class PromptPrefixCache(DynamicCache):
    """A `DynamicCache` holding the prefix shared by every row of a batch.

    The forward call that continues it directly (cache length == `prefix_length`) brings the rest
    of each row's prompt: `intervene` counts those tokens as prompt, not as generated text.
    """

    def __init__(self, prefix_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prefix_length = prefix_length


@dataclass
class PrefixedBatch:
    """Generation inputs laid out as [prefix | left padding | suffix] and the prefix's cache.

    `inputs` holds `input_ids` and `attention_mask` [batch, prefix + longest suffix], the same
    width as a left-padded batch of the whole prompts, so generated tokens start at the same column.
    """

    inputs: dict[str, Tensor]
    cache: PromptPrefixCache


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Number of leading token ids every row shares."""
    shortest = min(len(row) for row in rows)
    for i in range(shortest):
        token = rows[0][i]
        if any(row[i] != token for row in rows):
            return i
    return shortest


def sliding_window(model: Model) -> int | None:
    """The smallest attention window of the model's layers (None: every layer sees everything)."""
    config = model.hf.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    if window is None:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        return None
    return int(window)


@torch.no_grad()
def run_into_cache(model: Model, ids: Tensor, mask: Tensor, cache: DynamicCache) -> Tensor:
    """Run `ids` [batch, new] through the decoder, continuing `cache` and adding them to it.

    `mask` [batch, cached + new] covers the columns already in the cache and the new ones (on the
    input device); positions count real tokens only, so a row's real tokens must be contiguous
    (padding on their left, or on their right where nothing follows). Returns the final hidden
    states [batch, new, d_model] (after the final norm; the unembedding is not applied)."""
    decoder = module_at(model.hf, model.anatomy.family.decoder)
    out = decoder(
        input_ids=ids,
        attention_mask=mask,
        position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :],
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state


def padded_rows(rows: Sequence[Sequence[int]], pad: int, left: bool) -> tuple[Tensor, Tensor]:
    """(ids, mask) [len(rows), longest row] of token-id rows, each row at its left or right end."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span], mask[i, span] = torch.tensor(row, dtype=torch.long), 1
    return ids, mask


def prefixed_batch(
    model: Model,
    prompts: Sequence[str],
    max_new_tokens: int,
    min_prefix: int = MIN_PREFIX_TOKENS,
    groups: Sequence[Hashable] | None = None,
) -> PrefixedBatch | None:
    """The batch of `prompts` with their shared prefix run once, or None where sharing would not
    pay (fewer than two prompts or `min_prefix` shared tokens) or would not be exact (the sequence
    could outgrow a sliding window).

    `groups`: a label per prompt, for a batch of prompts asked in different ways (a brief and a
    thorough instruction before the same questions): each group's rows share their own prefix,
    the distinct prefixes run together in one call (right-padded to the longest), and a row is
    [its prefix | pads | its suffix], the pads hidden by the mask as a left-padded batch's are.

    Call it inside the same `intervene` / `steer` block as the generation, so the prefix sees the
    same edits as the rest of the prompt (or outside it, for edits that leave the prompt alone).
    """
    if len(prompts) < 2:
        return None
    labels = [0] * len(prompts) if groups is None else list(groups)
    tokenizer = model.tokenizer
    rows = tokenizer(list(prompts)).input_ids
    members: dict[Hashable, list[list[int]]] = {}
    for label, row in zip(labels, rows, strict=True):
        members.setdefault(label, []).append(row)
    # Keep at least one token of every prompt out of its prefix: the continuing call brings it.
    shared = {
        label: min(common_prefix_length(group), min(len(row) for row in group) - 1)
        for label, group in members.items()
    }
    if min(shared.values()) < min_prefix:
        return None
    prefixes = list(dict.fromkeys(tuple(group[0][: shared[label]]) for label, group in members.items()))
    length = max(len(prefix) for prefix in prefixes)
    lengths = [shared[label] for label in labels]
    width = length + max(len(row) - n for row, n in zip(rows, lengths, strict=True))
    window = sliding_window(model)
    if window is not None and width + max_new_tokens > window:
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (row, n) in enumerate(zip(rows, lengths, strict=True)):
        ids[i, :n] = torch.tensor(row[:n])
        mask[i, :n] = 1
        ids[i, width - len(row) + n :] = torch.tensor(row[n:])
        mask[i, width - len(row) + n :] = 1
    device = input_device(model.hf)
    cache = PromptPrefixCache(length, config=model.hf.config)
    prefix_ids, prefix_mask = padded_rows(prefixes, pad, left=False)
    run_into_cache(model, prefix_ids.to(device), prefix_mask.to(device), cache)
    which = [prefixes.index(tuple(row[:n])) for row, n in zip(rows, lengths, strict=True)]
    cache.batch_select_indices(torch.tensor(which, device=device))
    return PrefixedBatch({"input_ids": ids.to(device), "attention_mask": mask.to(device)}, cache)


@dataclass
class CachedPrompts:
    """Prompts in the left-padded batches of `tokenize_for_generate`, each batch run once up to its
    last column, for generating from the same prompts many times under edits that change only the
    last prompt token and what follows (a dev grid of SpARE or difference-of-means edits at the
    last prompt token): each generation then runs one prompt column and its new tokens.

    Edits at earlier prompt tokens would not reach the cached columns: use it only for edits whose
    positions are the last prompt token and later (`last_prompt`, `generated`)."""

    prompts: list[str]
    batch_size: int
    batches: list[PrefixedBatch]

    def inputs(self, index: int, repeats: int = 1) -> dict[str, Any]:
        """Generation inputs of batch `index`: ids, mask and a copy of its cache (generation
        extends the cache it is given); with `repeats`, each row repeated that many times in a
        row (row i * repeats + k is row i), for running as many settings at once."""
        batch = self.batches[index]
        cache = copy.deepcopy(batch.cache)
        if repeats == 1:
            return {**batch.inputs, "past_key_values": cache}
        cache.batch_repeat_interleave(repeats)
        repeated = {name: value.repeat_interleave(repeats, 0) for name, value in batch.inputs.items()}
        return {**repeated, "past_key_values": cache}


def cache_all_but_last(
    model: Model, prompts: Sequence[str], max_new_tokens: int, batch_size: int
) -> CachedPrompts | None:
    """`prompts` in batches of `batch_size`, each run up to its last column once (call it outside
    any edit). None where a sliding window could cut the sequence (prompt plus `max_new_tokens`
    longer than the window), where generating from the whole prompt is the exact path."""
    window = sliding_window(model)
    chunks = [
        tokenize_for_generate(model, list(prompts[start : start + batch_size]))
        for start in range(0, len(prompts), batch_size)
    ]
    widths = [inputs["input_ids"].shape[1] for inputs in chunks]
    if min(widths, default=2) < 2 or (
        window is not None and max(widths, default=0) + max_new_tokens > window
    ):
        return None
    batches = []
    for inputs, width in zip(chunks, widths, strict=True):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        cache = PromptPrefixCache(width - 1, config=model.hf.config)
        run_into_cache(model, ids[:, :-1], mask[:, :-1], cache)
        batches.append(PrefixedBatch(inputs, cache))
    return CachedPrompts(list(prompts), batch_size, batches)
