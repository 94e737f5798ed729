"""`SteeringVector`: directions at sites, the model they were made for, and how they were made.

Saved as `NAME.safetensors` (the directions) plus `NAME.json` (fingerprint and provenance).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from steerscope.cache import write_atomic
from steerscope.model import Model, as_model, config_digest
from steerscope.sites import Site

# Config entries that say where or how a model was stored, not what it computes.
_VOLATILE_CONFIG_KEYS = {
    "_name_or_path",
    "name_or_path",
    "dtype",
    "torch_dtype",
    "transformers_version",
    "architectures",
}


@dataclass(frozen=True)
class Fingerprint:
    """What a vector must match in a model: family, width, depth and a hash of the config."""

    family: str
    d_model: int
    n_layers: int
    config_hash: str

    @classmethod
    def of(cls, model: Any) -> Fingerprint:
        loaded = as_model(model)
        anatomy = loaded.anatomy
        return cls(anatomy.family.name, anatomy.d_model, anatomy.n_layers, config_digest(loaded.hf)[:16])


@dataclass
class SteeringVector:
    """One direction per site (e.g. {"L6.resid_post": [d_model]}), with fingerprint and provenance."""

    directions: dict[str, Tensor]
    fingerprint: Fingerprint
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a steering vector needs at least one direction")
        self.directions = {str(Site.parse(site)): d for site, d in self.directions.items()}
        for site, direction in self.directions.items():
            if direction.dim() != 1 or direction.shape[0] != self.fingerprint.d_model:
                raise ValueError(
                    f"direction at {site} has shape {tuple(direction.shape)}; expected ({self.fingerprint.d_model},)"
                )
            if not torch.isfinite(direction).all():
                raise ValueError(f"direction at {site} has NaN or Inf entries")
        self.provenance.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def sites(self) -> list[Site]:
        return [Site.parse(s) for s in self.directions]

    def check(self, model: Any) -> Model:
        """Fail clearly if this vector cannot be applied to `model`; return it as a `Model`."""
        loaded = as_model(model)
        other = Fingerprint.of(loaded)
        mine = self.fingerprint
        if (other.family, other.d_model) != (mine.family, mine.d_model):
            raise ValueError(
                f"vector made for {mine.family} with d_model {mine.d_model}; "
                f"this model is {other.family} with d_model {other.d_model}"
            )
        for site in self.sites:
            site.validate(loaded.anatomy)
        return loaded

    def save(self, path: str | Path) -> Path:
        """Write `path.safetensors` and `path.json` (atomically); returns the JSON path."""
        base = Path(path).with_suffix("")
        tensors = {
            site: d.detach().to("cpu", torch.float32).contiguous() for site, d in self.directions.items()
        }
        tmp = base.with_name(base.name + ".tmp.safetensors")
        save_file(tensors, str(tmp))
        tmp.replace(base.with_suffix(".safetensors"))
        meta = {"fingerprint": dataclasses.asdict(self.fingerprint), "provenance": self.provenance}
        write_atomic(base.with_suffix(".json"), json.dumps(meta, indent=2, default=str) + "\n")
        return base.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path, model: Any = None) -> SteeringVector:
        """Read a saved vector; with `model`, also check that it fits that model."""
        base = Path(path).with_suffix("")
        for suffix in (".json", ".safetensors"):
            if not base.with_suffix(suffix).is_file():
                raise FileNotFoundError(f"steering vector file missing: {base.with_suffix(suffix)}")
        meta = json.loads(base.with_suffix(".json").read_text())
        vector = cls(
            directions=load_file(str(base.with_suffix(".safetensors"))),
            fingerprint=Fingerprint(**meta["fingerprint"]),
            provenance=meta.get("provenance", {}),
        )
        if model is not None:
            vector.check(model)
        return vector
