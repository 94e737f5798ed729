"""SAE training data: the caller's texts cut into token windows, and their activations captured
once into bf16 safetensors shards that a killed build resumes from.

A window is at most `context - 1` tokens of one text (the tokenizer's BOS is added when it is
captured); identical windows are kept once; the windows are shuffled with the seed and taken
until `max_tokens` (`last_windows` instead takes the end of each text, and a capture keeps its
last token alone, for an SAE of last tokens). The first `holdout` of them are held out (never
trained on). Only tokens after the first of each window are stored: the first is BOS, whose residual is an outlier the SAE
need not reconstruct (with a tokenizer without BOS it is the text's first token, an attention
sink all the same). Shards hold `SHARD_WINDOWS` windows, every site of one capture pass, bf16
(half the memory of fp32; the reconstruction error of any SAE is far above bf16's rounding),
each beside a JSON with its XXH3-128, verified before a resumed build uses it.
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_tensors
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.cache import write_atomic
from steerscope.capture import capture
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest, file_digest
from steerscope.model import ModelLike

SHARD_WINDOWS = 64
MIN_WINDOW_TOKENS = 8
SPLITS = ("train", "eval")


def token_windows(
    tokenizer: Any, texts: Sequence[str], context: int, max_tokens: int | None, seed: int
) -> list[str]:
    """Decoded windows of at most `context - 1` tokens of the texts (shorter tails of at least
    `MIN_WINDOW_TOKENS` kept), distinct, shuffled by `seed`, until `max_tokens` tokens."""
    if context < MIN_WINDOW_TOKENS + 1:
        raise InputError(f"context must be at least {MIN_WINDOW_TOKENS + 1} tokens, got {context}")
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


def last_windows(
    tokenizer: Any, texts: Sequence[str], context: int, max_tokens: int | None, seed: int
) -> list[str]:
    """The last `context - 1` tokens of each text (those of at least `MIN_WINDOW_TOKENS`),
    distinct, shuffled by `seed`, at most `max_tokens` of them: the windows whose last token alone
    a `positions="last"` SAE trains on."""
    if context < MIN_WINDOW_TOKENS + 1:
        raise InputError(f"context must be at least {MIN_WINDOW_TOKENS + 1} tokens, got {context}")
    tails: dict[tuple[int, ...], None] = {}
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        if len(ids) >= MIN_WINDOW_TOKENS:
            tails.setdefault(tuple(ids[-(context - 1) :]), None)
    order = list(tails)
    random.Random(seed).shuffle(order)
    return [tokenizer.decode(list(tail)) for tail in order[:max_tokens]]


def split_windows(windows: list[str], holdout: float) -> dict[str, list[str]]:
    """{"train": ..., "eval": ...}: the first `holdout` fraction (at least one window) held out."""
    n_eval = max(1, round(holdout * len(windows)))
    if n_eval >= len(windows):
        raise InputError(
            f"{len(windows)} windows are too few to hold out {holdout:.0%} and train on the rest"
        )
    return {"eval": windows[:n_eval], "train": windows[n_eval:]}


def shard_path(folder: Path, split: str, index: int) -> Path:
    return folder / f"{split}-{index:05d}.safetensors"


def shard_damage(path: Path, sites: Sequence[str], n_windows: int) -> str | None:
    """What is wrong with a stored shard (a short phrase; "missing" if absent), or None when it
    matches the XXH3-128 in its JSON and holds every site for the expected number of windows."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
        if meta["windows"] != n_windows or sorted(meta["sites"]) != sorted(sites):
            return "written for other windows or sites"
        if file_digest(path) != meta[HASH_NAME]:
            return f"its bytes do not match the {HASH_NAME} in its JSON"
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"unreadable ({error.__class__.__name__}: {error})"
    return None


def capture_shards(
    model: ModelLike,
    windows: Sequence[str],
    sites: Sequence[str],
    folder: Path,
    split: str,
    batch_size: int = 16,
    progress: bool = True,
    last: bool = False,
) -> int:
    """Capture `windows` at `sites` into shards under `folder`, skipping shards that verify
    (`shard_damage`; a damaged one is captured again with a warning); returns the number of
    shards. `last`: keep each window's last token alone. Each shard's JSON is written after its
    tensors, so a shard exists once its JSON does."""
    folder.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(windows), SHARD_WINDOWS)
    for index in tqdm(starts, desc=f"capture {split}", disable=not progress, unit="shard"):
        chunk = list(windows[index : index + SHARD_WINDOWS])
        path = shard_path(folder, split, index // SHARD_WINDOWS)
        problem = shard_damage(path, sites, len(chunk))
        if problem is None:
            continue
        if problem != "missing":
            warnings.warn(f"SAE activation shard {path} {problem}; capturing it again", stacklevel=2)
        got = capture(model, chunk, list(sites), batch_size=batch_size, progress=False)
        if last:  # left padding: every window ends in the last column
            keep = torch.zeros_like(got.mask)
            keep[:, -1] = True
        else:
            keep = got.mask & (got.positions > 0)
        data = save_tensors({site: got[site][keep].to(torch.bfloat16).contiguous() for site in sites})
        write_atomic(path, data)
        meta = {"windows": len(chunk), "sites": list(sites), HASH_NAME: data_digest(data)}
        write_atomic(path.with_suffix(".json"), json.dumps(meta))
    return len(starts)


def load_site(folder: Path, split: str, site: str, n_shards: int) -> Tensor:
    """One site's stored activations [n_tokens, d] (bf16) over a split's shards, in order."""
    parts = []
    for index in range(n_shards):
        with safe_open(str(shard_path(folder, split, index)), framework="pt") as handle:
            parts.append(handle.get_tensor(site))
    return torch.cat(parts)
