"""`Model`: a transformers causal LM together with its tokenizer and anatomy.

It behaves like the wrapped model (`model(...)`, `model.generate(...)`, any attribute), so a
user's generation code runs unchanged. Every steerscope function also accepts the bare
transformers model, an nnsight model or a TransformerLens TransformerBridge, and unwraps it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from torch import nn

from steerscope.anatomy import Anatomy, anatomy_of
from steerscope.errors import InputError

if TYPE_CHECKING:
    from nnsight import NNsight
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel

# Config entries that say where or with which library a model was stored, not what it computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "name_or_path",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "architectures",
}


# id(config) -> (the config, a deep copy of its attributes, its digest): `steer()` fingerprints the
# model at every block, and serialising a config costs about half a millisecond. Holding the config
# keeps it alive, so no other object can take its id while it is here.
_DIGESTS: dict[int, tuple[Any, dict, str]] = {}


def config_digest(hf: nn.Module) -> str:
    """sha256 of a model's config without the entries that only say where or how it was stored.

    Remembered per config object while its attributes equal a deep copy taken when it was hashed
    (dict and list equality is recursive), so a config changed in place is hashed again."""
    config = hf.config
    known = _DIGESTS.get(id(config))
    if known is not None and _same(vars(config), known[1]):
        return known[2]
    entries = {k: v for k, v in sorted(config.to_dict().items()) if k not in _VOLATILE_CONFIG_KEYS}
    digest = hashlib.sha256(json.dumps(entries, sort_keys=True, default=str).encode()).hexdigest()
    if len(_DIGESTS) >= 64:
        _DIGESTS.clear()
    _DIGESTS[id(config)] = (config, copy.deepcopy(vars(config)), digest)
    return digest


def _same(attributes: dict, copied: dict) -> bool:
    try:
        return bool(attributes == copied)
    except Exception:  # an attribute whose == is not a truth value (a tensor): hash again
        return False


@dataclass(eq=False)
class Model:
    """A loaded model: `hf` (transformers module), `tokenizer`, `anatomy`, and where it came from."""

    hf: nn.Module
    tokenizer: Any
    anatomy: Anatomy
    source: str = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.hf(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the dataclass lacks: generate, config, device, ...
        if name in {"hf", "tokenizer", "anatomy", "source"}:
            raise AttributeError(name)
        return getattr(self.hf, name)

    def __repr__(self) -> str:
        return f"Model({self.source or type(self.hf).__name__}, {self.anatomy.family.name}, {self.anatomy.n_layers} layers)"


#: A model as every steerscope function takes it: a loaded `Model`, a transformers causal LM, an
#: nnsight model of one, or a TransformerLens TransformerBridge (`as_model` unwraps it, no copy).
#: A string, so using it never imports nnsight or TransformerLens.
ModelLike: TypeAlias = "Model | PreTrainedModel | NNsight | TransformerBridge"


def uncompiled(module: Any) -> Any:
    """The module `torch.compile(module)` wraps (its OptimizedModule keeps it as `_orig_mod`)."""
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) and type(module).__name__ == "OptimizedModule" else module


def unwrap_module(obj: ModelLike) -> tuple[nn.Module, Any]:
    """The underlying transformers module (and tokenizer, if found) of any supported wrapper."""
    if isinstance(obj, Model):
        return uncompiled(obj.hf), obj.tokenizer
    obj = uncompiled(obj)
    tokenizer = getattr(obj, "tokenizer", None)
    for attribute in ("original_model", "_module"):  # TransformerBridge, nnsight
        inner = getattr(obj, attribute, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "config"):
            return inner, tokenizer
    if isinstance(obj, nn.Module) and hasattr(obj, "config"):
        return obj, tokenizer
    if type(obj).__name__ == "HookedTransformer":
        raise InputError(
            "a HookedTransformer has no transformers modules to hook; use "
            "steerscope.interop.hooked_transformer_edits(...) with its own hook points"
        )
    raise InputError(
        f"expected a steerscope Model, a transformers causal LM, an nnsight model or a "
        f"TransformerBridge; got {type(obj).__name__}"
    )


def as_model(obj: ModelLike, tokenizer: Any = None) -> Model:
    """Wrap anything `unwrap_module` understands as a `Model` (no copy, no mutation)."""
    if isinstance(obj, Model):
        return obj
    hf, found = unwrap_module(obj)
    return Model(hf=hf, tokenizer=tokenizer or found, anatomy=anatomy_of(hf), source=type(obj).__name__)
