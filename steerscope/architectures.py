"""One small table entry per architecture family: where each component lives.

Paths are relative to a decoder layer unless they start at the model root.
Adding a family is adding one `Family(...)` to `FAMILIES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from steerscope.errors import InputError

#: How a projection module lays out its output: "flat" is [batch, pos, heads * head_dim]
#: (a plain q_proj), "bshd" is [batch, pos, heads, head_dim], "bhsd" is [batch, heads, pos, head_dim].
HeadLayout = str


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps its parts (module paths as dotted strings)."""

    name: str
    model_types: tuple[str, ...]
    layers: str = "model.layers"
    decoder: str = "model"
    attention: str = "self_attn"
    q_pre_rope: str = "self_attn.q_proj"
    k_pre_rope: str = "self_attn.k_proj"
    v: str = "self_attn.v_proj"
    qk_layout: HeadLayout = "flat"
    attn_out: str = "self_attn"
    mlp_out: str = "mlp"
    rotary_layout: str = "rotate_half"
    linears: tuple[tuple[str, str], ...] = (
        ("q", "self_attn.q_proj"),
        ("k", "self_attn.k_proj"),
        ("v", "self_attn.v_proj"),
        ("o", "self_attn.o_proj"),
        ("gate", "mlp.gate_proj"),
        ("up", "mlp.up_proj"),
        ("down", "mlp.down_proj"),
    )


FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama",)),
    Family("mistral", ("mistral",)),
    Family("qwen2", ("qwen2",)),
    # Qwen3 normalises q and k per head before RoPE; the norm's output is [b, s, h, d].
    Family(
        "qwen3",
        ("qwen3",),
        q_pre_rope="self_attn.q_norm",
        k_pre_rope="self_attn.k_norm",
        qk_layout="bshd",
    ),
    # Gemma 3 normalises after the head transpose ([b, h, s, d]) and adds post-norms to the
    # residual branches, so the branch outputs are the post-norms' outputs.
    Family(
        "gemma3",
        ("gemma3_text",),
        q_pre_rope="self_attn.q_norm",
        k_pre_rope="self_attn.k_norm",
        qk_layout="bhsd",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
    ),
    # The multimodal Gemma 3 checkpoints (4B and up) keep the same text stack one level deeper.
    Family(
        "gemma3_multimodal",
        ("gemma3",),
        layers="model.language_model.layers",
        decoder="model.language_model",
        q_pre_rope="self_attn.q_norm",
        k_pre_rope="self_attn.k_norm",
        qk_layout="bhsd",
        attn_out="post_attention_layernorm",
        mlp_out="post_feedforward_layernorm",
    ),
)


def known_families() -> list[str]:
    """Names of the supported families, for error messages."""
    return [family.name for family in FAMILIES]


def family_for(model_type: str) -> Family:
    """The family entry for a `config.model_type`; unknown types fail naming the known ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise InputError(f"unsupported architecture {model_type!r}; known families: {known}")
