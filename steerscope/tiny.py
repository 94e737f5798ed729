"""Tiny randomly initialised models of each supported family, with no download: for tests."""

from __future__ import annotations

import string
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from steerscope.anatomy import anatomy_of
from steerscope.errors import InputError
from steerscope.model import Model

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=2048,  # room for the few-shot prompts of the natural data, one token a character
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def char_tokenizer(extra_tokens: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """A character-level tokenizer over printable ASCII that prepends <bos> and pads left."""
    vocab = [*SPECIAL_TOKENS, *extra_tokens, *dict.fromkeys(string.printable)]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    pieces = [pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")]
    if extra_tokens:
        pattern = "|".join(_regex_escape(t) for t in extra_tokens)
        pieces.insert(0, pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(pieces) if len(pieces) > 1 else pieces[0]
    backend.decoder = decoders.Fuse()
    return with_bos_and_left_padding(backend, extra_tokens)


def with_bos_and_left_padding(
    backend: Tokenizer, extra_tokens: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over `backend` (whose vocabulary has `SPECIAL_TOKENS`) that
    prepends <bos> to every text and pads on the left, as steerscope's batching expects."""
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A",
        pair="<bos> $A $B",
        special_tokens=[("<bos>", backend.token_to_id("<bos>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        additional_special_tokens=list(extra_tokens),
    )


def _regex_escape(text: str) -> str:
    """Escape a literal for a tokenizers (Oniguruma) regex."""
    return "".join("\\" + c if not c.isalnum() else c for c in text)


def tiny_config(family: str, vocab_size: int, **overrides: Any) -> PretrainedConfig:
    """A small config of `family` (llama, mistral, qwen2, qwen3, gemma3); `overrides` replace
    config fields (sizes, token ids). Gemma 3 gets a full-attention layer every fourth layer."""
    shape = dict(_SHAPE, vocab_size=vocab_size) | overrides
    if family == "gemma3":
        n_layers = shape["num_hidden_layers"]
        shape.setdefault("sliding_window", 8)
        shape.setdefault("query_pre_attn_scalar", shape["head_dim"])
        return Gemma3TextConfig(
            **shape,
            layer_types=[
                "full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(n_layers)
            ],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
            },
        )
    configs = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    if family not in configs:
        raise InputError(f"no tiny config for {family!r}; choose from {', '.join([*configs, 'gemma3'])}")
    return configs[family](**shape)


def tiny_model(
    family: str = "llama",
    seed: int = 0,
    extra_tokens: tuple[str, ...] = (),
    dtype: torch.dtype = torch.float32,
) -> Model:
    """A randomly initialised `family` model (eval mode) with a character tokenizer."""
    tokenizer = char_tokenizer(extra_tokens)
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(tiny_config(family, len(tokenizer)), dtype=dtype)
    hf.eval()
    return Model(hf=hf, tokenizer=tokenizer, anatomy=anatomy_of(hf), source=f"tiny-{family}")
