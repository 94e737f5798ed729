"""SAE training data: the caller's texts cut into token windows, and their activations captured
once into bf16 safetensors shards that a killed build resumes from.

A window is at most `context - 1` tokens of one text (the tokenizer's BOS is added when it is
captured); identical windows are kept once; the windows are shuffled with the seed and taken
until `max_tokens`. The first `holdout` of them are held out (never trained on). Only tokens
after the first of each window are stored: the first is BOS, whose residual is an outlier the SAE
need not reconstruct (with a tokenizer without BOS it is the text's first token, an attention
sink all the same). Shards hold `SHARD_WINDOWS` windows, every site of one capture pass, bf16
(half the memory of fp32; the reconstruction error of any SAE is far above bf16's rounding).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.capture import capture

SHARD_WINDOWS = 64
MIN_WINDOW_TOKENS = 8
SPLITS = ("train", "eval")


def token_windows(
    tokenizer: Any, texts: Sequence[str], context: int, max_tokens: int | None, seed: int
) -> list[str]:
    """Decoded windows of at most `context - 1` tokens of the texts (shorter tails of at least
    `MIN_WINDOW_TOKENS` kept), distinct, shuffled by `seed`, until `max_tokens` tokens."""
    if context < MIN_WINDOW_TOKENS + 1:
        raise ValueError(f"context must be at least {MIN_WINDOW_TOKENS + 1} tokens, got {context}")
    length = context - 1
    chunks: dict[tuple[int, ...], None] = {}
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        for start in range(0, len(ids), length):
            chunk = tuple(ids[start : start + length])
            if len(chunk) >= MIN_WINDOW_TOKENS:
                chunks.setdefault(chunk, None)
    order = list(chunks)
    random.Random(seed).shuffle(order)
    kept, total = [], 0
    for chunk in order:
        if max_tokens is not None and total >= max_tokens:
            break
        kept.append(chunk)
        total += len(chunk)
    return [tokenizer.decode(list(chunk)) for chunk in kept]


def split_windows(windows: list[str], holdout: float) -> dict[str, list[str]]:
    """{"train": ..., "eval": ...}: the first `holdout` fraction (at least one window) held out."""
    n_eval = max(1, round(holdout * len(windows)))
    if n_eval >= len(windows):
        raise ValueError(
            f"{len(windows)} windows are too few to hold out {holdout:.0%} and train on the rest"
        )
    return {"eval": windows[:n_eval], "train": windows[n_eval:]}


def shard_path(folder: Path, split: str, index: int) -> Path:
    return folder / f"{split}-{index:05d}.safetensors"


def _is_complete(path: Path, sites: Sequence[str], n_windows: int) -> bool:
    """A shard exists, opens, and holds every site for the expected number of windows."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            return int(metadata["windows"]) == n_windows and set(json.loads(metadata["sites"])) == set(sites)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def capture_shards(
    model: Any,
    windows: Sequence[str],
    sites: Sequence[str],
    folder: Path,
    split: str,
    batch_size: int = 16,
    progress: bool = True,
) -> int:
    """Capture `windows` at `sites` into shards under `folder`, skipping complete shards; returns
    the number of shards. Each shard is written to a temporary name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(windows), SHARD_WINDOWS)
    for index in tqdm(starts, desc=f"capture {split}", disable=not progress, unit="shard"):
        chunk = list(windows[index : index + SHARD_WINDOWS])
        path = shard_path(folder, split, index // SHARD_WINDOWS)
        if _is_complete(path, sites, len(chunk)):
            continue
        got = capture(model, chunk, list(sites), batch_size=batch_size, progress=False)
        keep = got.mask & (got.positions > 0)
        tensors = {site: got[site][keep].to(torch.bfloat16).contiguous() for site in sites}
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"windows": str(len(chunk)), "sites": json.dumps(list(sites))})
        tmp.replace(path)
    return len(starts)


def load_site(folder: Path, split: str, site: str, n_shards: int) -> Tensor:
    """One site's stored activations [n_tokens, d] (bf16) over a split's shards, in order."""
    parts = []
    for index in range(n_shards):
        with safe_open(str(shard_path(folder, split, index)), framework="pt") as handle:
            parts.append(handle.get_tensor(site))
    return torch.cat(parts)
