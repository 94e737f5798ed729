"""Language-model metrics without sampling: log-probabilities of continuations, the top next-token
probability, and perplexity.

Logits are computed only where they are needed (`logits_to_keep`), which matters for Gemma's
262k-token vocabulary: full logits for a batch of 128-token windows would take gigabytes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from steerscope.capture import prompt_list, tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.intervene import Edit, intervene
from steerscope.model import Model, ModelLike, as_model
from steerscope.prefix_cache import CachedPrompts, padded_rows, sliding_window
from steerscope.row_groups import interleaved_edits


@torch.no_grad()
def greedy_continuations(
    model: ModelLike,
    prompts: Sequence[str],
    max_new_tokens: int = 4,
    batch_size: int = 16,
    progress: bool = False,
    cached: CachedPrompts | None = None,
    first_line: bool = False,
) -> list[str]:
    """The greedy continuation of each prompt, decoded and stripped.

    Batches are left-padded (`steerscope.capture.tokenize`), so a continuation does not depend on
    which other prompts share its batch. `cached`: the same prompts and batch size run up to their
    last token once (`steerscope.prefix_cache.cache_all_but_last`), for edits from the last prompt
    token on. `first_line`: only the first line of each continuation, each row stopped once that
    line has ended (a call stops when all its rows have).
    """
    prompts = prompt_list(prompts)
    loaded = as_model(model)
    if cached is not None and (cached.prompts != list(prompts) or cached.batch_size != batch_size):
        raise InputError(
            "greedy_continuations: `cached` holds other prompts or another batch size; build it with "
            "cache_all_but_last(model, prompts, max_new_tokens, batch_size) for these prompts"
        )
    device = _device(loaded)
    texts = []
    for index, start in enumerate(
        tqdm(range(0, len(prompts), batch_size), desc="generating", disable=not progress, leave=False)
    ):
        if cached is not None:
            batch = cached.inputs(index)
        else:
            batch = tokenize_for_generate(loaded, list(prompts[start : start + batch_size]))
            batch = {k: v.to(device) for k, v in batch.items()}
        texts += _greedy(loaded, batch, max_new_tokens, first_line)
    return texts


@torch.no_grad()
def greedy_continuations_in_settings(
    model: ModelLike,
    cached: CachedPrompts,
    settings: Sequence[Mapping[str, Edit]],
    max_new_tokens: int = 4,
    max_rows: int = 128,
    first_line: bool = False,
    progress: str | None = None,
) -> list[list[str]]:
    """`greedy_continuations(model, cached.prompts, cached=cached)` under each setting's edits
    (`intervene` edits from the last prompt token on, as `cached` requires), one list per setting.

    The settings of a cached batch run as rows of one `generate` call, at most `max_rows` rows
    per call (`steerscope.row_groups`): each row's continuation is the one its setting gives
    alone. `progress`: a bar's title (over the calls)."""
    loaded = as_model(model)
    texts = [[""] * len(cached.prompts) for _ in settings]
    calls = []
    for index, batch in enumerate(cached.batches):
        n_rows = batch.inputs["input_ids"].shape[0]
        per_call = max(1, max_rows // n_rows)
        calls += [
            (index, first, settings[first : first + per_call]) for first in range(0, len(settings), per_call)
        ]
    for index, first, group in tqdm(calls, desc=progress, disable=progress is None, leave=False):
        with intervene(loaded, interleaved_edits(group)):
            rows = _greedy(loaded, cached.inputs(index, repeats=len(group)), max_new_tokens, first_line)
        start = index * cached.batch_size
        for r, text in enumerate(rows):
            texts[first + r % len(group)][start + r // len(group)] = text
    return texts


class FirstLineEnded(StoppingCriteria):
    """Stops each row once its continuation (after `prompt_width` columns), leading whitespace
    left out, holds a line break: the first line cannot change after it."""

    def __init__(self, tokenizer: Any, prompt_width: int) -> None:
        self.tokenizer, self.prompt_width = tokenizer, prompt_width

    def __call__(self, input_ids: Tensor, scores: Any, **kwargs: Any) -> Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_width :], skip_special_tokens=True)
        return torch.tensor(["\n" in text.lstrip() for text in texts], device=input_ids.device)


def _greedy(model: Model, batch: dict[str, Any], max_new_tokens: int, first_line: bool) -> list[str]:
    """One greedy `generate` call's continuations, decoded and stripped (`first_line`: each row's
    first line, the row stopped once it has ended)."""
    width = batch["input_ids"].shape[1]
    stop = [FirstLineEnded(model.tokenizer, width)] if first_line else []
    out = model.hf.generate(
        **batch,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=model.tokenizer.pad_token_id,
        stopping_criteria=StoppingCriteriaList(stop),
    )
    texts = [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in out[:, width:]]
    return [text.split("\n", 1)[0].strip() for text in texts] if first_line else texts


def _device(model: ModelLike) -> torch.device:
    return next(as_model(model).hf.parameters()).device


@torch.no_grad()
def top_token_probability(model: ModelLike, prompts: Sequence[str], batch_size: int = 16) -> Tensor:
    """The probability [n] of the most likely next token after each prompt (left-padded batches)."""
    prompts = prompt_list(prompts)
    loaded = as_model(model)
    device = _device(loaded)
    chunks = []
    for start in range(0, len(prompts), batch_size):
        batch = tokenize(loaded, list(prompts[start : start + batch_size]))
        logits = loaded.hf(**{k: v.to(device) for k, v in batch.items()}, logits_to_keep=1).logits[:, -1]
        chunks.append(logits.float().softmax(-1).amax(-1).cpu())
    return torch.cat(chunks)


def continuation_tokens(model: ModelLike, continuations: Sequence[str]) -> list[list[int]]:
    """Each continuation's token ids, tokenized on its own (no special tokens), so a full word with
    a leading space (" basket") is scored as the model would write it after a prompt."""
    tokenizer = as_model(model).tokenizer
    rows = []
    for continuation in continuations:
        tail = tokenizer(continuation, add_special_tokens=False).input_ids
        if not tail:
            raise InputError(f"continuation {continuation!r} has no tokens")
        rows.append(tail)
    return rows


@torch.no_grad()
def continuation_logprobs(
    model: ModelLike,
    prompts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    progress: bool = False,
) -> Tensor:
    """Sum of log p(continuation tokens | prompt) for each (prompt, continuation) pair: [n].

    The continuation's tokens (`continuation_tokens`) are appended to the prompt's tokens."""
    prompts, continuations = prompt_list(prompts), prompt_list(continuations, "continuations")
    if len(prompts) != len(continuations):
        raise InputError(f"got {len(prompts)} prompts and {len(continuations)} continuations")
    loaded = as_model(model)
    tokenizer = loaded.tokenizer
    tails = continuation_tokens(loaded, continuations)
    rows = [(tokenizer(prompt).input_ids, tail) for prompt, tail in zip(prompts, tails, strict=True)]
    device = _device(loaded)
    pad = tokenizer.pad_token_id or 0
    scores = []
    for start in tqdm(range(0, len(rows), batch_size), desc="scoring", disable=not progress, leave=False):
        chunk = rows[start : start + batch_size]
        width = max(len(h) + len(t) for h, t in chunk)
        keep = max(len(t) for _, t in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (head, tail) in enumerate(chunk):
            sequence = head + tail
            ids[i, width - len(sequence) :] = torch.tensor(sequence)
            mask[i, width - len(sequence) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = loaded.hf(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep + 1,
        )
        logprobs = F.log_softmax(
            out.logits.float(), dim=-1
        )  # [b, keep + 1, vocab]: predicts the last keep+1 tokens' successors
        for i, (_, tail) in enumerate(chunk):
            n = len(tail)
            # the logit at kept index j predicts token width - keep + j; the tail is the last n tokens
            predicting = logprobs[i, keep - n : keep]
            targets = torch.tensor(tail, device=predicting.device)
            scores.append(predicting.gather(-1, targets[:, None]).sum().item())
    return torch.tensor(scores)


@torch.no_grad()
def cached_option_logprobs(
    model: ModelLike, cached: CachedPrompts, options: Sequence[Sequence[str]], progress: bool = False
) -> list[Tensor]:
    """For each cached prompt, log p of each of its `options` as a full continuation (as
    `continuation_logprobs` scores it): one tensor [len(options[i])] per prompt.

    The prompts ran once up to their last token (`steerscope.prefix_cache.cache_all_but_last`);
    each option continues a copy of its prompt's cache with the last prompt token and its own tokens
    (right-padded), so a story with several answers and foils runs its tokens once, not once per
    option. Build `cached` with `max_new_tokens` at least the longest option's token count."""
    loaded = as_model(model)
    if len(options) != len(cached.prompts):
        raise InputError(f"got {len(cached.prompts)} cached prompts and options for {len(options)}")
    tails = [continuation_tokens(loaded, row) for row in options]
    window = sliding_window(loaded)
    longest = max((len(t) for row in tails for t in row), default=0)
    widest = max(batch.inputs["input_ids"].shape[1] for batch in cached.batches)
    if window is not None and widest + longest > window:
        raise InputError(
            f"an option of {longest} tokens after a {widest}-token prompt outgrows the "
            f"{window}-token sliding window; build `cached` with max_new_tokens >= {longest} "
            "(cache_all_but_last returns None where the window could cut a sequence)"
        )
    pad = loaded.tokenizer.pad_token_id or 0
    scores: list[Tensor] = []
    for index, batch in enumerate(
        tqdm(cached.batches, desc="scoring options", disable=not progress, leave=False)
    ):
        ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
        mine = tails[index * cached.batch_size : index * cached.batch_size + ids.shape[0]]
        rows = [(i, tail) for i, row in enumerate(mine) for tail in row]
        if not rows:
            scores.extend(torch.empty(0) for _ in mine)
            continue
        story = torch.tensor([i for i, _ in rows], device=ids.device)
        tail_ids, tail_mask = padded_rows([[int(ids[i, -1])] + tail for i, tail in rows], pad, left=False)
        full_mask = torch.cat([mask[story, :-1], tail_mask.to(ids.device)], 1)
        cache = copy.deepcopy(batch.cache)
        cache.batch_select_indices(story)
        logits = loaded.hf(
            input_ids=tail_ids.to(ids.device),
            attention_mask=full_mask,
            position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)[:, -tail_ids.shape[1] :],
            past_key_values=cache,
            use_cache=True,
        ).logits.float()
        # logits[r, j] predicts the option's token j (position 0 is the last prompt token)
        totals = [
            (logits[r, : len(tail)].log_softmax(-1)[torch.arange(len(tail)), torch.tensor(tail)]).sum()
            for r, (_, tail) in enumerate(rows)
        ]
        owner = torch.tensor([i for i, _ in rows])
        flat = torch.stack(totals).cpu()
        scores.extend(flat[owner == i] for i in range(len(mine)))
    return scores


@torch.no_grad()
def perplexity(
    model: ModelLike, windows: Sequence[Sequence[int]], batch_size: int = 2, progress: bool = False
) -> float:
    """Perplexity over token-id windows (full language-model loss on every next token)."""
    if not windows:
        raise InputError("windows is empty; perplexity needs at least one token window")
    loaded = as_model(model)
    device = _device(loaded)
    total, count = 0.0, 0
    for start in tqdm(
        range(0, len(windows), batch_size), desc="perplexity", disable=not progress, leave=False
    ):
        chunk = windows[start : start + batch_size]
        if len({len(w) for w in chunk}) != 1:
            raise InputError("perplexity windows in one batch must have the same length")
        ids = torch.tensor([list(w) for w in chunk], device=device)
        logits = loaded.hf(input_ids=ids).logits.float()
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum")
        total += loss.item()
        count += ids[:, 1:].numel()
    return math.exp(total / count)
