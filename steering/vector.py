"""`SteeringVector`: directions at sites, the model they were made for, and how they were made.

Saved as `NAME.safetensors` (the directions) plus `NAME.json` (fingerprint, provenance, and the
XXH3-128 of the safetensors file and of the fingerprint and provenance), so a damaged or edited
file is refused on load with an error that names it. NAME is the name given, dots included
(`sentiment.L1` and `sentiment.L3` are two vectors); only a trailing `.json` or `.safetensors`,
naming one of the two files, is taken off. Other engines' formats: `save_gguf` / `load_gguf`
(llama.cpp control vectors, `steerscope.steering.control_vector`) and the steering-vectors and
repeng conversions (`steerscope.steering.vector_libraries`).
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor

from steerscope.cache import write_atomic
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest
from steerscope.model import Model, ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.fingerprint import Fingerprint, metadata_digest

_FILE_SUFFIXES = (".json", ".safetensors")


def vector_files(path: str | Path) -> tuple[Path, Path]:
    """(JSON, safetensors) of the vector named `path`: the name as given, dots included, with a
    trailing `.json` or `.safetensors` (one of its own files) taken off; a `.gguf` name is refused,
    since that is a control vector's file and its sidecar would share the JSON name."""
    base = Path(path)
    if base.suffix in _FILE_SUFFIXES:
        base = base.with_name(base.stem)
    if base.suffix == ".gguf":
        raise InputError(
            f"{path}: a .gguf name is a llama.cpp control vector; use save_gguf / load_gguf for it, "
            "or a name without .gguf for steerscope's safetensors + JSON"
        )
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".safetensors")


@dataclass
class SteeringVector:
    """One direction per site (e.g. {"L6.resid_post": [d_model]}), with fingerprint and provenance."""

    directions: dict[str, Tensor]
    fingerprint: Fingerprint
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise InputError("a steering vector needs at least one direction")
        self.directions = {str(Site.parse(site)): d for site, d in self.directions.items()}
        for site, direction in self.directions.items():
            if not isinstance(direction, Tensor) or not direction.is_floating_point():
                raise InputError(
                    f"direction at {site} must be a float tensor, got {type(direction).__name__}"
                )
            if direction.dim() != 1 or direction.shape[0] != self.fingerprint.d_model:
                raise InputError(
                    f"direction at {site} has shape {tuple(direction.shape)}; expected ({self.fingerprint.d_model},)"
                )
            if not torch.isfinite(direction).all():
                raise InputError(f"direction at {site} has NaN or Inf entries")
        self.provenance.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def sites(self) -> list[Site]:
        return [Site.parse(s) for s in self.directions]

    def check(self, model: ModelLike, force: bool = False) -> Model:
        """Fail clearly if this vector was made for another model; return `model` as a `Model`.

        Family, d_model, n_layers and the config digest must match. `force=True` applies it to a
        model that differs in anything but d_model (e.g. a fine-tune with another config), with a
        warning; a different d_model or a site the model lacks is always an error.
        """
        loaded = as_model(model)
        other = Fingerprint.of(loaded)
        mine = self.fingerprint
        if other != mine:
            message = (
                f"vector made for {mine.family} with d_model {mine.d_model}, {mine.n_layers} layers, config "
                f"{mine.config_hash}; this model is {other.family} with d_model {other.d_model}, "
                f"{other.n_layers} layers, config {other.config_hash}"
            )
            if other.d_model != mine.d_model:
                raise InputError(message)
            if not force:
                raise InputError(message + "; pass force=True to apply it anyway")
            warnings.warn(message + "; applied anyway (force=True)", stacklevel=2)
        for site in self.sites:
            site.validate(loaded.anatomy)
        return loaded

    def save(self, path: str | Path) -> Path:
        """Write `NAME.safetensors` and `NAME.json` for the name `path` (see `vector_files`),
        atomically, tensors first; returns the JSON path."""
        json_path, tensors_path = vector_files(path)
        tensors = {
            site: d.detach().to("cpu", torch.float32).contiguous() for site, d in self.directions.items()
        }
        data = save_tensors(tensors)
        fingerprint = dataclasses.asdict(self.fingerprint)
        meta = {
            "fingerprint": fingerprint,
            "provenance": self.provenance,
            "content_hash": {
                "algorithm": HASH_NAME,
                "directions": data_digest(data),
                "metadata": metadata_digest(fingerprint, self.provenance),
            },
        }
        write_atomic(tensors_path, data)
        write_atomic(json_path, json.dumps(meta, indent=2, default=str) + "\n")
        return json_path

    @classmethod
    def load(cls, path: str | Path, model: ModelLike = None, force: bool = False) -> SteeringVector:
        """Read a saved vector, verifying its content hashes; with `model`, also check that it fits
        that model (`force` as in `check`). Any problem is an `InputError` naming the file."""
        json_path, tensors_path = vector_files(path)
        for file in (json_path, tensors_path):
            if not file.is_file():
                raise InputError(f"steering vector file missing: {file}")
        try:
            meta = json.loads(json_path.read_text())
            fingerprint, provenance = meta["fingerprint"], meta.get("provenance", {})
            hashes = meta["content_hash"]
            expected_metadata, expected_directions = hashes["metadata"], hashes["directions"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{json_path} is not a steering vector's JSON ({error.__class__.__name__}: {error}); "
                "it needs fingerprint, provenance and content_hash, as SteeringVector.save writes"
            ) from None
        if metadata_digest(fingerprint, provenance) != expected_metadata:
            raise InputError(
                f"{json_path}: fingerprint or provenance was changed after saving (content hash differs)"
            )
        data = tensors_path.read_bytes()
        if data_digest(data) != expected_directions:
            raise InputError(
                f"{tensors_path} was changed after saving or belongs to another vector (its {HASH_NAME} "
                f"differs from the one in {json_path.name})"
            )
        try:
            vector = cls(
                directions=load_tensors(data),
                fingerprint=Fingerprint(**fingerprint),
                provenance=provenance,
            )
        except (SafetensorError, ValueError, TypeError) as error:
            raise InputError(f"{tensors_path}: not a valid steering vector ({error})") from None
        if model is not None:
            vector.check(model, force=force)
        return vector

    def save_gguf(
        self,
        path: str | Path,
        strength: float = 1.0,
        scale: str = "absolute",
        residual_norms: Mapping[str, float] | None = None,
    ) -> Path:
        """Write a llama.cpp control vector `path` (.gguf) and its sidecar `path.json`; returns
        the GGUF path. See `steerscope.steering.control_vector`."""
        from steerscope.steering.control_vector import save_control_vector

        return save_control_vector(
            self.directions, self.fingerprint, self.provenance, path, strength, scale, residual_norms
        )

    @classmethod
    def load_gguf(cls, path: str | Path, model: ModelLike, force: bool = False) -> SteeringVector:
        """Read a llama.cpp control vector for `model` (with its sidecar when there is one) and
        check it fits (`force` as in `check`). See `steerscope.steering.control_vector`."""
        from steerscope.steering.control_vector import read_control_vector

        vector = cls(**read_control_vector(path, model, force))
        vector.check(model, force=force)
        return vector

    @classmethod
    def from_steering_vectors(cls, vector: Any, model: ModelLike) -> SteeringVector:
        """A steering-vectors `SteeringVector` for `model` as ours; its `apply(model,
        multiplier=m)` equals `steer(model, ours, m, scale="absolute", positions="all")`."""
        from steerscope.steering.vector_libraries import from_steering_vectors

        return cls(**from_steering_vectors(vector, model))

    def to_steering_vectors(self) -> Any:
        """This vector as a steering-vectors `SteeringVector` (one layer type: one site kind)."""
        from steerscope.steering.vector_libraries import to_steering_vectors

        return to_steering_vectors(self.directions, self.fingerprint)

    @classmethod
    def from_repeng(cls, vector: Any, model: ModelLike, force: bool = False) -> SteeringVector:
        """A repeng `ControlVector` for `model` as ours (resid_post sites); its `set_control(v,
        coeff)` equals `steer(model, ours, coeff, scale="absolute", positions="all")`."""
        from steerscope.steering.vector_libraries import from_repeng

        return cls(**from_repeng(vector, model, force))

    def to_repeng(self) -> Any:
        """This vector as a repeng `ControlVector` (resid_post sites only)."""
        from steerscope.steering.vector_libraries import to_repeng

        return to_repeng(self.directions, self.fingerprint)
