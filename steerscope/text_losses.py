"""The language-model loss of each text: the mean next-token cross-entropy over every token after
the first (the tokenizer's special tokens added), as HF's `model(ids, labels=ids).loss`.

`text_losses` runs each text whole and forms its batch's full logits. `paired_text_losses` serves
two texts per row that open with the same tokens (a prompt followed by two answers, as SpARE's
targets need): the shared tokens run once into a KV cache and each text continues from it, and the
unembedding is applied to a chunk of real positions at a time, so no [batch, seq, vocab] tensor is
ever formed (a gigabyte per 1k positions in fp32 with Gemma 3's 262k-token vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import DynamicCache

from steerscope.capture import tokenize
from steerscope.errors import InputError
from steerscope.model import Model, ModelLike, as_model, uncompiled
from steerscope.offload import input_device
from steerscope.prefix_cache import common_prefix_length, padded_rows, run_into_cache

#: The causal-LM classes (by module and name, so no subclass passes for one) whose forward turns
#: the decoder's final hidden states h into logits as `lm_head(h)`, followed where True by
#: `cap * tanh(logits / cap)` with cap = `config.final_logit_softcapping` when that is set
#: (transformers 5: `LlamaForCausalLM.forward`, `Gemma3ForCausalLM.forward`, ...). Any other
#: model's losses come from its own forward (`text_losses`).
KNOWN_HEADS = {
    "transformers.models.llama.modeling_llama.LlamaForCausalLM": False,
    "transformers.models.mistral.modeling_mistral.MistralForCausalLM": False,
    "transformers.models.qwen2.modeling_qwen2.Qwen2ForCausalLM": False,
    "transformers.models.qwen3.modeling_qwen3.Qwen3ForCausalLM": False,
    "transformers.models.gemma3.modeling_gemma3.Gemma3ForCausalLM": True,
}

#: Logit elements formed at once (128 MB in fp32): 128 positions of Gemma 3's vocabulary.
LOGIT_CHUNK_ELEMENTS = 2**25


@torch.no_grad()
def text_losses(
    model: ModelLike, texts: Sequence[str], batch_size: int = 4, progress: bool = False
) -> Tensor:
    """L [n]: each text's loss from the model's own forward, in left-padded batches (a row counts
    only its own tokens), each batch's full logits [batch, seq, vocab] formed at once."""
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    loaded = as_model(model)
    device = next(loaded.hf.parameters()).device
    losses = []
    for start in tqdm(
        range(0, len(texts), batch_size), desc="text losses", disable=not progress, leave=False
    ):
        batch = {k: v.to(device) for k, v in tokenize(loaded, texts[start : start + batch_size]).items()}
        logits = loaded.hf(**batch).logits[:, :-1].float()
        targets, mask = batch["input_ids"][:, 1:], batch["attention_mask"]
        counted = (mask[:, 1:] & mask[:, :-1]).float()
        token_loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        losses.append(((token_loss * counted).sum(1) / counted.sum(1)).cpu())
    return torch.cat(losses)


@dataclass(frozen=True)
class LogitHead:
    """A causal LM's map from final hidden states to logits, as its forward applies it."""

    linear: nn.Module
    softcap: float | None
    vocab: int

    def __call__(self, hidden: Tensor) -> Tensor:
        logits = self.linear(hidden)
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def logit_head(hf: nn.Module) -> LogitHead | None:
    """The head of a model in `KNOWN_HEADS`; None for any other model."""
    hf = uncompiled(hf)
    kind = type(hf)
    softcaps = KNOWN_HEADS.get(f"{kind.__module__}.{kind.__qualname__}")
    if softcaps is None:
        return None
    softcap = getattr(hf.config, "final_logit_softcapping", None) if softcaps else None
    return LogitHead(hf.lm_head, softcap, hf.lm_head.out_features)


def chunked_token_losses(head: LogitHead, hidden: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy [n] of the logits of each final hidden state (`hidden` [n, d_model]) against
    its target token ([n]), in fp32, `LOGIT_CHUNK_ELEMENTS // vocab` positions at a time."""
    step = max(1, LOGIT_CHUNK_ELEMENTS // head.vocab)
    losses = []
    for states, tokens in zip(hidden.split(step), targets.split(step), strict=True):
        logits = head(states).float()
        # over a [1, vocab, n] view, the layout `text_losses` gives cross_entropy: the two layouts
        # sum a softmax's terms in different orders, 1e-4 apart in fp32 over Gemma 3's vocabulary
        tokens = tokens.to(logits.device)
        losses.append(F.cross_entropy(logits.t()[None], tokens[None], reduction="none")[0])
    return torch.cat(losses)


@torch.no_grad()
def paired_text_losses(
    model: ModelLike,
    first: Sequence[str],
    second: Sequence[str],
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """(`text_losses(first)`, `text_losses(second)`), each token the two texts of a row open with
    run once.

    Per row, the tokens both texts start with, but the last of them, run into a KV cache
    (`steerscope.prefix_cache.run_into_cache`), so every cached position predicts a token both texts
    share; the cache is repeated for the two texts, whose remaining tokens continue from it (the
    layout of a left-padded batch, right pads after). Only real positions are unembedded, a chunk
    at a time (`chunked_token_losses`), so `batch_size` rows run at once for any vocabulary. A
    model outside `KNOWN_HEADS` runs `text_losses` twice (in its own smaller batches).
    """
    if len(first) != len(second):
        raise InputError(f"got {len(first)} first texts and {len(second)} second texts")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    loaded = as_model(model)
    head = logit_head(loaded.hf)
    if head is None:
        return text_losses(loaded, first, progress=progress), text_losses(loaded, second, progress=progress)
    pairs = list(zip(_token_rows(loaded, first), _token_rows(loaded, second), strict=True))
    losses = [
        _pair_losses(loaded, head, pairs[start : start + batch_size])
        for start in tqdm(
            range(0, len(pairs), batch_size), desc="text losses", disable=not progress, leave=False
        )
    ]
    both = torch.cat(losses)
    return both[:, 0], both[:, 1]


def _token_rows(model: Model, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, as `tokenize` makes them (padding dropped)."""
    batch = tokenize(model, texts)
    return [
        ids[mask.bool()].tolist()
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]


def _pair_losses(model: Model, head: LogitHead, pairs: list[tuple[list[int], list[int]]]) -> Tensor:
    """Losses [len(pairs), 2] of one batch of token-id pairs (`paired_text_losses`)."""
    cached = [max(common_prefix_length(pair) - 1, 0) for pair in pairs]
    texts = [text for pair in pairs for text in pair]  # row i's first text at 2i, its second at 2i + 1
    tails = [text[c:] for pair, c in zip(pairs, cached, strict=True) for text in pair]
    pad = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    device = input_device(model.hf)
    ids, mask = (
        t.to(device)
        for t in padded_rows([pair[0][:c] for pair, c in zip(pairs, cached, strict=True)], pad, True)
    )
    tail_ids, tail_mask = (t.to(device) for t in padded_rows(tails, pad, False))
    cache = DynamicCache(config=model.hf.config)
    # the hidden states of the positions that predict a token: every cached one, then the tails'
    states = [run_into_cache(model, ids, mask, cache)[mask.bool()]] if ids.shape[1] else []
    cache.batch_repeat_interleave(2)
    hidden_tail = run_into_cache(
        model, tail_ids, torch.cat([mask.repeat_interleave(2, 0), tail_mask], 1), cache
    )
    predicts = tail_mask.bool()  # a text's last token predicts nothing
    predicts[torch.arange(len(tails)), torch.tensor([len(t) - 1 for t in tails])] = False
    states.append(hidden_tail[predicts])
    targets = [pair[0][1 : c + 1] for pair, c in zip(pairs, cached, strict=True)] + [t[1:] for t in tails]
    token_losses = chunked_token_losses(
        head, torch.cat(states), torch.tensor([token for row in targets for token in row], dtype=torch.long)
    ).cpu()
    # each target's row: a pair's (cached tokens, counted in both texts), then a text's (its tail)
    owner = torch.tensor([i for i, row in enumerate(targets) for _ in row], dtype=torch.long)
    sums = torch.zeros(len(targets)).index_add_(0, owner, token_losses)
    totals = sums[len(pairs) :] + sums[: len(pairs)].repeat_interleave(2)
    counts = torch.tensor([len(text) - 1 for text in texts], dtype=torch.float32)
    return (totals / counts).view(len(pairs), 2)
