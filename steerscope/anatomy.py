"""The anatomy of a loaded model: its sizes, rotary layout and where each component lives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from steerscope.architectures import Family, family_for
from steerscope.errors import InputError


@dataclass(frozen=True)
class Anatomy:
    """Sizes, rotary settings per layer and module paths of one decoder-only model."""

    family: Family
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    vocab_size: int
    layer_types: tuple[str, ...]
    rope_bases: tuple[float, ...]
    max_positions: int | None = None  # the positions the model was built for (None: undeclared)

    @property
    def n_rotary_pairs(self) -> int:
        """Rotary pairs per head: dims i and i + head_dim/2 rotate together (rotate-half layout)."""
        return self.head_dim // 2

    def layer_path(self, layer: int) -> str:
        """Dotted path of decoder layer `layer`, e.g. `model.layers.9`."""
        return f"{self.family.layers}.{layer}"

    def component_path(self, layer: int, component: str) -> str:
        """Dotted path of a component (a path relative to the layer) of layer `layer`."""
        return f"{self.layer_path(layer)}.{component}"

    def linear_weights(self) -> dict[tuple[int, str], str]:
        """Parameter names of the seven linear maps of every layer, keyed by (layer, kind)."""
        return {
            (layer, kind): f"{self.component_path(layer, path)}.weight"
            for layer in range(self.n_layers)
            for kind, path in self.family.linears
        }

    def __str__(self) -> str:
        bases = sorted(set(self.rope_bases))
        by_base = {base: [i for i, b in enumerate(self.rope_bases) if b == base] for base in bases}
        base_text = "; ".join(f"{base:g} at layers {_ranges(layers)}" for base, layers in by_base.items())
        lines = [
            f"family        {self.family.name}",
            f"layers        {self.n_layers}",
            f"d_model       {self.d_model}",
            f"heads         {self.n_heads} query / {self.n_kv_heads} KV, head_dim {self.head_dim}",
            f"d_mlp         {self.d_mlp}",
            f"vocab         {self.vocab_size}",
            f"positions     {self.max_positions or 'not declared'}",
            f"rotary        {self.family.rotary_layout}, {self.n_rotary_pairs} pairs per head",
            f"rope bases    {base_text}",
            f"layers at     {self.family.layers}",
        ]
        kinds = sorted(set(self.layer_types))
        if len(kinds) > 1:
            for kind in kinds:
                layers = [i for i, t in enumerate(self.layer_types) if t == kind]
                lines.append(f"{kind:<13} {_ranges(layers)}")
        return "\n".join(lines)


def _ranges(indices: list[int]) -> str:
    """Compact text for a sorted index list: [0,1,2,5] -> '0-2,5'."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in indices[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(f"{start}-{prev}" if prev > start else f"{start}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def _rope_base(rope_parameters: dict, layer_type: str) -> float:
    """The rotary base of one layer from a config's `rope_parameters` (flat or per layer type)."""
    params = rope_parameters.get(layer_type, rope_parameters)
    if "rope_theta" not in params:
        raise InputError(f"config has no rope_theta for layer type {layer_type!r}")
    return float(params["rope_theta"])


def anatomy_of(model: nn.Module) -> Anatomy:
    """Read the anatomy of a transformers causal LM from its config and family entry."""
    config = getattr(model, "config", None)
    if config is None:
        raise InputError(f"expected a transformers model with a .config, got {type(model).__name__}")
    family = family_for(config.model_type)
    text = config.get_text_config(decoder=True)
    n_layers = text.num_hidden_layers
    n_heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // n_heads
    layer_types = tuple(getattr(text, "layer_types", None) or ["full_attention"] * n_layers)
    rope_parameters = getattr(text, "rope_parameters", None) or {
        "rope_theta": getattr(text, "rope_theta", 10000.0)
    }
    return Anatomy(
        family=family,
        n_layers=n_layers,
        d_model=text.hidden_size,
        n_heads=n_heads,
        n_kv_heads=getattr(text, "num_key_value_heads", None) or n_heads,
        head_dim=head_dim,
        d_mlp=text.intermediate_size,
        vocab_size=text.vocab_size,
        layer_types=layer_types,
        rope_bases=tuple(_rope_base(rope_parameters, t) for t in layer_types),
        max_positions=max_positions(config),
    )


def max_positions(config: Any) -> int | None:
    """The positions a model's config declares (`max_position_embeddings` of its text model)."""
    value = getattr(config.get_text_config(decoder=True), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None
