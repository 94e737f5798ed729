"""llama.cpp control vectors: a steering vector as a GGUF file other engines load.

The format (llama.cpp `common_control_vector_load` and `llama_adapter_cvec`): a GGUF with
`general.architecture = "controlvector"` and one F32 1-D tensor `direction.N` [d_model] per
steered block N >= 1, added to the output of block N (HF `model.layers[N]`, our `LN.resid_post`)
at every token; block 0 has no slot (the engine's buffer starts at layer 1). `--control-vector-scaled
FILE S` multiplies the file by S; several files are summed. repeng also writes
`controlvector.model_hint` (the HF `model_type`) and `controlvector.layer_count` (the number of
directions), and so does `save_control_vector`.

So only `resid_post` sites at layers >= 1 travel, at absolute scale with the strength baked in:
relative strength (a fraction of each token's residual norm) and position modes other than
"all" have no llama.cpp equivalent. A relative strength is converted only with stated mean
residual norms (`mean_residual_norms`), recorded in the sidecar.

The sidecar `FILE.gguf.json` keeps what GGUF cannot say: sites, positions and scale of the
directions as written, the conversion, fingerprint and provenance, and XXH3-128 hashes of the
GGUF bytes and of itself, so `load_control_vector` restores the vector exactly and refuses a GGUF
changed after saving. A GGUF without a sidecar (repeng's, or any other writer's) is read as a
vector for the model it is loaded with, after checking width and depth.
"""

from __future__ import annotations

import json
import math
import numbers
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from steerscope.cache import atomic_file, write_atomic
from steerscope.capture import capture
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, file_digest
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.fingerprint import Fingerprint, metadata_digest

ARCHITECTURE = "controlvector"
SCALES = ("absolute", "relative")
SIDECAR_FORMAT = "steerscope control vector sidecar 1"
_DIRECTION = re.compile(r"^direction\.(\d+)$")


def sidecar_path(path: str | Path) -> Path:
    """Where the sidecar JSON of the control vector `path` lives: `path` + `.json`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _gguf_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix != ".gguf":
        raise InputError(f"{path}: a control vector file must end in .gguf (llama.cpp loads GGUF files)")
    return path


def model_hint(family: str) -> str:
    """The HF `model_type` repeng writes as `controlvector.model_hint` for a steerscope family."""
    from steerscope.architectures import FAMILIES

    return next(f.model_types[0] for f in FAMILIES if f.name == family)


def _finite(value: Any) -> float | None:
    """`value` as a float when it is a finite real number (NumPy scalars and 0-d tensors too)."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, np.generic, Tensor)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def _strength(value: Any) -> float:
    number = _finite(value)
    if number is None:
        raise InputError(f"strength must be a finite number, got {value!r:.80} ({type(value).__name__})")
    return number


def _exportable_layers(directions: Mapping[str, Tensor], n_layers: int) -> dict[int, Tensor]:
    """{block: direction} for llama.cpp, or an error naming the first site it cannot hold."""
    layers = {}
    for key, direction in directions.items():
        site = Site.parse(key)
        if site.kind != "resid_post" or site.head is not None:
            raise InputError(
                f"{site}: a llama.cpp control vector only adds to the residual stream leaving a block "
                f"(resid_post, layers 1-{n_layers - 1}); {site.kind} cannot be exported"
            )
        if site.layer == 0:
            raise InputError(
                f"{site}: llama.cpp never steers block 0 (its control-vector buffer starts at layer 1); "
                f"export a direction at layers 1-{n_layers - 1}"
            )
        layers[site.layer] = direction
    return dict(sorted(layers.items()))


def mean_residual_norms(
    model: ModelLike, texts: Sequence[str], sites: Sequence[str | Site]
) -> dict[str, float]:
    """{site: mean L2 norm of the activation} over the real tokens of `texts` after the first.

    The first token of a text (BOS on Gemma) is an attention sink whose residual norm is an
    outlier many times the rest, so it is left out. This is the norm a relative strength is
    converted with: relative s adds s * ||h_t|| at each token t, a control vector s * mean ||h||.
    """
    acts = capture(model, list(texts), [str(Site.parse(s)) for s in sites])
    keep = acts.mask.bool() & (acts.positions > 0)
    if not keep.any():
        raise InputError("mean_residual_norms needs texts of at least two tokens")
    return {site: acts[site].norm(dim=-1)[keep].double().mean().item() for site in acts.activations}


def _written_directions(
    layers: dict[int, Tensor],
    strength: float,
    scale: str,
    residual_norms: Mapping[str, float] | None,
) -> tuple[dict[int, Tensor], dict[str, Any] | None]:
    """The F32 tensors to write (what llama.cpp adds at scale 1) and, for a relative strength,
    the conversion to record."""
    if scale == "absolute":
        return {n: strength * d.detach().to("cpu", torch.float32) for n, d in layers.items()}, None
    if residual_norms is None:
        raise InputError(
            "relative strength has no llama.cpp equivalent (it scales with each token's residual norm); "
            "pass residual_norms=mean_residual_norms(model, texts, sites) to convert it at the mean "
            "norm, or scale='absolute'"
        )
    written, norms = {}, {}
    for n, direction in layers.items():
        site = f"L{n}.resid_post"
        norm = _finite(residual_norms.get(site))
        if norm is None or norm <= 0:
            raise InputError(
                f"residual_norms needs a positive finite norm for {site}, got {residual_norms.get(site)!r}"
            )
        unit = direction.detach().to("cpu", torch.float32)
        if unit.norm() == 0:
            raise InputError(f"direction at {site} has zero norm, so a relative strength cannot scale it")
        written[n] = (strength * norm) * (unit / unit.norm())
        norms[site] = norm
    return written, {"from_scale": "relative", "strength": strength, "mean_residual_norms": norms}


def save_control_vector(
    directions: Mapping[str, Tensor],
    fingerprint: Fingerprint,
    provenance: dict[str, Any],
    path: str | Path,
    strength: float = 1.0,
    scale: str = "absolute",
    residual_norms: Mapping[str, float] | None = None,
) -> Path:
    """Write a vector's directions as a llama.cpp control vector `path` (.gguf) plus `path.json`
    (with its fingerprint and provenance); returns `path`.

    `direction.N` = strength x the direction at LN.resid_post (`scale="absolute"`), so llama.cpp at
    scale 1 adds what `steer(model, vector, strength, scale="absolute", positions="all")` adds.
    `scale="relative"` needs `residual_norms` ({site: mean norm}, see `mean_residual_norms`) and
    writes strength x norm x unit direction. Sites other than resid_post, layer 0, a bad strength
    or scale: one line, before anything is written. Both files are written atomically.
    """
    import gguf

    path = _gguf_path(path)
    strength = _strength(strength)
    if scale not in SCALES:
        raise InputError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    layers = _exportable_layers(directions, fingerprint.n_layers)
    written, conversion = _written_directions(layers, strength, scale, residual_norms)
    for n, tensor in written.items():
        if not torch.isfinite(tensor).all():
            raise InputError(f"strength {strength} times the direction at L{n}.resid_post overflows float32")
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
        writer.add_string(f"{ARCHITECTURE}.model_hint", model_hint(fingerprint.family))
        writer.add_uint32(f"{ARCHITECTURE}.layer_count", len(written))
        for n, tensor in written.items():
            writer.add_tensor(f"direction.{n}", tensor.numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    meta = {
        "format": SIDECAR_FORMAT,
        "gguf": path.name,
        "sites": [f"L{n}.resid_post" for n in written],
        "positions": "all",
        "scale": "absolute",
        "baked_strength": strength,
        "conversion": conversion,
        "fingerprint": vars(fingerprint).copy(),
        "provenance": provenance,
    }
    meta["content_hash"] = {
        "algorithm": HASH_NAME,
        "gguf": file_digest(path),
        "metadata": metadata_digest(meta["fingerprint"], _described(meta)),
    }
    write_atomic(sidecar_path(path), json.dumps(meta, indent=2, default=str) + "\n")
    return path


def _described(meta: dict) -> dict:
    """The sidecar entries its metadata hash covers besides the fingerprint."""
    return {k: v for k, v in meta.items() if k not in ("fingerprint", "content_hash")}


def _string_field(reader: Any, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        return str(field.contents())
    except (ValueError, TypeError, IndexError):
        return None


def _read_directions(path: Path, d_model: int, n_layers: int) -> tuple[dict[int, Tensor], str | None]:
    """{block: direction} and the model hint of a control-vector GGUF, each problem one line
    naming the file and the tensor."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise InputError(f"{path}: not a readable GGUF file ({error.__class__.__name__}: {error})") from None
    architecture = _string_field(reader, "general.architecture")
    if architecture != ARCHITECTURE:
        raise InputError(
            f"{path}: general.architecture is {architecture!r}, not {ARCHITECTURE!r}: not a llama.cpp "
            "control vector (a model GGUF is loaded with ss.load)"
        )
    if not reader.tensors:
        raise InputError(f"{path}: no direction tensors")
    directions: dict[int, Tensor] = {}
    for tensor in reader.tensors:
        where = f"{path}: tensor {tensor.name}"
        match = _DIRECTION.match(tensor.name)
        if match is None:
            raise InputError(f"{where}: llama.cpp reads only tensors named direction.N (N >= 1)")
        layer = int(match[1])
        if layer == 0:
            raise InputError(f"{where}: layer 0 cannot be steered (llama.cpp's buffer starts at layer 1)")
        if layer >= n_layers:
            raise InputError(f"{where}: layer {layer} is beyond this model's layers 1-{n_layers - 1}")
        if layer in directions:
            raise InputError(f"{where}: given twice")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise InputError(
                f"{where}: must be 1-D F32, got {tensor.tensor_type.name} with shape {tuple(int(s) for s in tensor.shape)}"
            )
        if tensor.n_elements != d_model:
            raise InputError(f"{where}: has {tensor.n_elements} entries; this model's d_model is {d_model}")
        data = np.array(tensor.data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise InputError(f"{where}: has NaN or Inf entries")
        directions[layer] = torch.from_numpy(data)
    return dict(sorted(directions.items())), _string_field(reader, f"{ARCHITECTURE}.model_hint")


def _read_sidecar(path: Path, json_path: Path) -> dict:
    """The verified sidecar of `path`: its own hash and the GGUF's must match."""
    try:
        meta = json.loads(json_path.read_text())
        hashes = meta["content_hash"]
        if meta.get("format") != SIDECAR_FORMAT:
            raise KeyError("format")
        expected = metadata_digest(meta["fingerprint"], _described(meta))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(
            f"{json_path} is not a control vector sidecar ({error.__class__.__name__}: {error}); "
            "remove it to load the GGUF as a plain control vector"
        ) from None
    if expected != hashes.get("metadata"):
        raise InputError(f"{json_path} was changed after saving (content hash differs)")
    if file_digest(path) != hashes.get("gguf"):
        raise InputError(
            f"{path} was changed after saving or belongs to another sidecar (its {HASH_NAME} differs from "
            f"the one in {json_path.name}); remove {json_path.name} to load it as a plain control vector"
        )
    return meta


def read_control_vector(path: str | Path, model: ModelLike, force: bool = False) -> dict[str, Any]:
    """The directions, fingerprint and provenance (`SteeringVector` arguments) of the control
    vector `path` for `model`: `direction.N` becomes LN.resid_post, so `steer(model, vector, s,
    scale="absolute", positions="all")` adds what llama.cpp adds at scale s.

    Every tensor is checked (name direction.N with 1 <= N < n_layers, 1-D F32 of d_model finite
    entries) and any problem is one line naming the file and the tensor. With the sidecar the
    fingerprint and provenance come back as saved (the caller checks them against the model);
    without it the vector is taken as made for `model`, whose `model_type` must match the file's
    model hint unless `force`. provenance["control_vector"] records the file and, from the
    sidecar, the strength baked in and any conversion.
    """
    path = _gguf_path(path)
    if not path.is_file():
        raise InputError(f"control vector file missing: {path}")
    loaded = as_model(model)
    anatomy = loaded.anatomy
    directions, hint = _read_directions(path, anatomy.d_model, anatomy.n_layers)
    sites = {f"L{n}.resid_post": d for n, d in directions.items()}
    json_path = sidecar_path(path)
    record: dict[str, Any] = {"file": str(path), HASH_NAME: file_digest(path), "model_hint": hint}
    if json_path.is_file():
        meta = _read_sidecar(path, json_path)
        if sorted(meta["sites"]) != sorted(sites):
            raise InputError(f"{json_path}: lists sites {meta['sites']}, the GGUF holds {list(sites)}")
        record |= {k: meta[k] for k in ("positions", "scale", "baked_strength", "conversion")}
        fingerprint, provenance = Fingerprint(**meta["fingerprint"]), dict(meta["provenance"])
    else:
        own = model_hint(anatomy.family.name)
        if hint is not None and hint != own:
            message = f"{path}: made for model type {hint!r}; this model is {own!r}"
            if not force:
                raise InputError(message + "; pass force=True to load it anyway")
            warnings.warn(message + "; loaded anyway (force=True)", stacklevel=3)
        fingerprint, provenance = Fingerprint.of(loaded), {"imported_from": "llama.cpp control vector"}
    provenance["control_vector"] = record
    return {"directions": sites, "fingerprint": fingerprint, "provenance": provenance}
