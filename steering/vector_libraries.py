"""Steering vectors to and from the HF steering libraries: steering-vectors and repeng.

Both add a stored tensor, times a multiplier, to a module's output at every token, keyed by
decoder-block index, the way `steer(..., scale="absolute", positions="all")` adds a direction:

- steering-vectors `SteeringVector(layer_activations={N: tensor}, layer_type=T)`: T names a
  module of block N found by its guessers (`model.layers.{N}` itself for "decoder_block", else
  `model.layers.{N}.{T}`). A layer type is a steerscope site kind where that module is the one the
  family's anatomy hooks for it: "decoder_block" is resid_post; "self_attn" and "mlp" are attn_out
  and mlp_out on families whose branches end there (llama, mistral, qwen), while on Gemma 3 the
  branch ends at its post-norm, so there attn_out is "post_attention_layernorm" and mlp_out has no
  layer type. Negative layer numbers count from the end, as in the library.
- repeng `ControlVector(model_type, directions={N: ndarray})`: `ControlModel` adds directions[N] to
  the output of `model.layers[N]` (resid_post), as its `export_gguf` writes `direction.N`.

The conventions are checked against the real packages in tests/test_vector_interop.py (same
logits as steerscope, bit for bit).
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerscope.architectures import FAMILIES, Family
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.control_vector import model_hint
from steerscope.steering.fingerprint import Fingerprint

#: steering-vectors layer type -> the module of a decoder block its default guesser finds ("" is the block).
LAYER_TYPE_MODULES = {
    "decoder_block": "",
    "self_attn": "self_attn",
    "mlp": "mlp",
    "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm",
}


def _kind_modules(family: Family) -> dict[str, str]:
    """Site kind -> the module of a decoder block whose output the anatomy edits for it."""
    return {"resid_post": "", "attn_out": family.attn_out, "mlp_out": family.mlp_out}


def _family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)


def layer_type_for(kind: str, family: Family) -> str | None:
    """The steering-vectors layer type that edits site kind `kind` on `family`, or None."""
    module = _kind_modules(family).get(kind)
    return (
        next((t for t, m in LAYER_TYPE_MODULES.items() if m == module), None) if module is not None else None
    )


def _layer(key: Any, n_layers: int, what: str) -> int:
    """A layer index from a library's dict key; negative counts from the end, as the libraries do."""
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise InputError(f"{what}: layer keys must be integers, got {key!r}")
    layer = int(key) + n_layers if key < 0 else int(key)
    if not 0 <= layer < n_layers:
        raise InputError(f"{what}: layer {key} is out of range; this model has layers 0-{n_layers - 1}")
    return layer


def from_steering_vectors(vector: Any, model: ModelLike) -> dict[str, Any]:
    """The `SteeringVector` arguments of a steering-vectors `SteeringVector` for `model`
    (tensors copied)."""
    loaded = as_model(model)
    family = loaded.anatomy.family
    layer_type = getattr(vector, "layer_type", None)
    activations = getattr(vector, "layer_activations", None)
    if not isinstance(activations, dict):
        raise InputError(f"expected a steering_vectors.SteeringVector, got {type(vector).__name__}")
    kinds = {t: k for k in _kind_modules(family) if (t := layer_type_for(k, family)) is not None}
    if layer_type not in kinds:
        valid = ", ".join(f"{t} ({k})" for t, k in kinds.items())
        raise InputError(
            f"steering-vectors layer_type {layer_type!r} edits no steerscope site on {family.name}; "
            f"valid: {valid}"
        )
    kind = kinds[layer_type]
    directions = {
        f"L{_layer(n, loaded.anatomy.n_layers, 'steering-vectors vector')}.{kind}": torch.as_tensor(t)
        .detach()
        .clone()
        for n, t in activations.items()
    }
    provenance = {"imported_from": "steering-vectors", "layer_type": layer_type}
    return {"directions": directions, "fingerprint": Fingerprint.of(loaded), "provenance": provenance}


def to_steering_vectors(directions: Mapping[str, Tensor], fingerprint: Fingerprint) -> Any:
    """A vector's directions as a steering-vectors `SteeringVector`; it has one layer type, so
    all sites must be of one kind that has a layer type on the vector's family."""
    from steering_vectors import SteeringVector as LibraryVector

    family = _family(fingerprint.family)
    sites = [Site.parse(s) for s in directions]
    kinds = {site.kind for site in sites}
    layer_type = layer_type_for(next(iter(kinds)), family) if len(kinds) == 1 else None
    if layer_type is None or any(s.head is not None for s in sites):
        mappable = [k for k in _kind_modules(family) if layer_type_for(k, family)]
        raise InputError(
            f"a steering-vectors vector has one layer_type; this vector's sites ({', '.join(directions)}) "
            f"must all be one of {', '.join(mappable)} on {family.name}"
        )
    activations = {site.layer: d.detach().clone() for site, d in zip(sites, directions.values(), strict=True)}
    return LibraryVector(layer_activations=activations, layer_type=layer_type)


def from_repeng(vector: Any, model: ModelLike, force: bool = False) -> dict[str, Any]:
    """The `SteeringVector` arguments of a repeng `ControlVector` for `model`, at resid_post
    (arrays copied).

    Its `model_type` must be the model's (`force=True` loads it anyway, with a warning)."""
    loaded = as_model(model)
    directions = getattr(vector, "directions", None)
    if not isinstance(directions, dict) or not directions:
        raise InputError(f"expected a repeng ControlVector with directions, got {type(vector).__name__}")
    own = model_hint(loaded.anatomy.family.name)
    made_for = getattr(vector, "model_type", None)
    if made_for != own:
        message = f"repeng vector made for model type {made_for!r}; this model is {own!r}"
        if not force:
            raise InputError(message + "; pass force=True to convert it anyway")
        warnings.warn(message + "; converted anyway (force=True)", stacklevel=2)
    sites = {
        f"L{_layer(n, loaded.anatomy.n_layers, 'repeng vector')}.resid_post": torch.tensor(np.asarray(d))
        for n, d in directions.items()
    }
    provenance = {"imported_from": "repeng", "model_type": made_for}
    return {"directions": sites, "fingerprint": Fingerprint.of(loaded), "provenance": provenance}


def _repeng() -> Any:
    """The `repeng` module. repeng 0.4.0 (its latest release) names `np.float_` in annotations,
    which NumPy 2 removed, so it fails to import; the alias is provided for the import only."""
    if "repeng" in sys.modules or hasattr(np, "float_"):
        return importlib.import_module("repeng")
    np.float_ = np.float64  # type: ignore[attr-defined]
    try:
        return importlib.import_module("repeng")
    finally:
        del np.float_


def to_repeng(directions: Mapping[str, Tensor], fingerprint: Fingerprint) -> Any:
    """A vector's directions as a repeng `ControlVector` (float32 arrays); every site must be
    resid_post."""
    bad = [s for s in directions if Site.parse(s).kind != "resid_post" or Site.parse(s).head is not None]
    if bad:
        raise InputError(
            f"repeng steers decoder-block outputs (resid_post) only; {', '.join(bad)} cannot convert"
        )
    arrays = {
        Site.parse(site).layer: d.detach().to("cpu", torch.float32).numpy().copy()
        for site, d in directions.items()
    }
    return _repeng().ControlVector(model_type=model_hint(fingerprint.family), directions=arrays)
