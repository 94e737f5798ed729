"""`Fingerprint`: what a steering vector must match in a model, and the hash that seals a saved
vector's metadata (shared by steerscope's own files and the control-vector sidecar)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from steerscope.hashing import data_digest
from steerscope.model import ModelLike, as_model, config_digest


def metadata_digest(fingerprint: dict, provenance: dict) -> str:
    """XXH3-128 of the fingerprint and provenance as canonical JSON (what `save` writes)."""
    text = json.dumps({"fingerprint": fingerprint, "provenance": provenance}, sort_keys=True, default=str)
    return data_digest(text.encode())


@dataclass(frozen=True)
class Fingerprint:
    """What a vector must match in a model: family, width, depth and a hash of the config."""

    family: str
    d_model: int
    n_layers: int
    config_hash: str

    @classmethod
    def of(cls, model: ModelLike) -> Fingerprint:
        loaded = as_model(model)
        anatomy = loaded.anatomy
        return cls(anatomy.family.name, anatomy.d_model, anatomy.n_layers, config_digest(loaded.hf)[:16])
