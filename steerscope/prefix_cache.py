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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache

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


def prefixed_batch(
    model: Model, prompts: Sequence[str], max_new_tokens: int, min_prefix: int = MIN_PREFIX_TOKENS
) -> PrefixedBatch | None:
    """The batch of `prompts` with their shared prefix run once, or None where sharing would not
    pay (fewer than two prompts or `min_prefix` shared tokens) or would not be exact (the sequence
    could outgrow a sliding window).

    Call it inside the same `intervene` / `steer` block as the generation, so the prefix sees the
    same edits as the rest of the prompt.
    """
    if len(prompts) < 2:
        return None
    tokenizer = model.tokenizer
    rows = tokenizer(list(prompts)).input_ids
    # Keep at least one token of every prompt out of the prefix: the continuing call brings it.
    shared = min(common_prefix_length(rows), min(len(row) for row in rows) - 1)
    if shared < min_prefix:
        return None
    width = max(len(row) for row in rows)
    window = sliding_window(model)
    if window is not None and width + max_new_tokens > window:
        return None
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, :shared] = torch.tensor(rows[0][:shared])
    mask[:, :shared] = 1
    for i, row in enumerate(rows):
        suffix = row[shared:]
        ids[i, width - len(suffix) :] = torch.tensor(suffix)
        mask[i, width - len(suffix) :] = 1
    device = input_device(model.hf)
    cache = PromptPrefixCache(shared, config=model.hf.config)
    with torch.no_grad():
        model.hf(
            input_ids=ids[:1, :shared].to(device),
            attention_mask=mask[:1, :shared].to(device),
            position_ids=torch.arange(shared, device=device)[None],
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    cache.batch_repeat_interleave(len(rows))
    return PrefixedBatch({"input_ids": ids.to(device), "attention_mask": mask.to(device)}, cache)
