"""Diagonal empirical Fisher of the linear weights: how sensitive the loss on a data set is to each weight.

Wu et al. 2025, "How LLMs encode Theory-of-Mind" (arXiv 2504.04238): the sensitivity of weight
theta on data set D is F_D(theta) = sum over samples x in D of (d loss(x) / d theta)^2, with one
gradient per sample (the square of a batch gradient would add cross terms between samples).
Only the seven linear maps (q, k, v, o, gate, up, down) of every decoder layer are scored.

`fisher_scores` is the reference: one forward and backward pass per sample.
`cached_fisher_scores` computes with the batched path of `steerscope.kernels.per_sample_grads`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from steerscope.cache import cache_root, cached_folder
from steerscope.errors import InputError
from steerscope.kernels.per_sample_grads import LossSample, batched_fisher_scores
from steerscope.model import ModelLike, as_model, config_digest
from steerscope.offload import execution_device, input_device, stored_value

#: Bump when the meaning of a score changes, so old cache entries are not reused.
_FORMAT = "fisher-v1/per-sample/mean-ce"
SCORES_FILE = "scores.safetensors"


def sample_loss(hf: nn.Module, sample: LossSample) -> Tensor:
    """Mean cross-entropy over the sample's counted tokens (a scalar), computed in fp32.

    The mean (not the sum) keeps a long generic window and a one-token ToM answer on the same
    scale per sample; logits are projected only at the positions that predict counted tokens.
    """
    device = input_device(hf)
    ids = sample.input_ids.to(device=device, dtype=torch.long)
    positions = sample.loss_mask[1:].nonzero().squeeze(1).to(device)  # position t-1 predicts token t
    out = hf(input_ids=ids[None], use_cache=False, logits_to_keep=positions)
    logits = out.logits[0].float()  # [n_counted, vocab]
    return F.cross_entropy(logits, ids[positions + 1], reduction="mean")


def fisher_scores(
    model: ModelLike, samples: Sequence[LossSample], progress: bool = True
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher sum_x (d loss(x)/d W)^2 of every layer's seven linear weights.

    Returns {parameter name: fp32 tensor shaped like the weight}, in `linear_weights()` order.
    Exact per-sample gradients (batch size 1, `sample_loss`), eval mode. Gradients come from
    `torch.autograd.grad`, so no `.grad` is written; the model's `requires_grad` flags and
    train/eval mode are restored on exit, exceptions included.
    """
    loaded = as_model(model)
    hf = loaded.hf
    params = dict(hf.named_parameters())
    names = list(loaded.anatomy.linear_weights().values())
    weights = _weights(names, params)
    offloaded = [n for n, w in zip(names, weights, strict=True) if w.device.type == "meta"]
    if offloaded:
        raise InputError(
            f"fisher_scores takes gradients of the weights themselves, but accelerate offloads "
            f"{len(offloaded)} of them (e.g. {offloaded[0]}) and loads fresh copies at every forward; "
            "use cached_fisher_scores(..., method='batched') or kernels.per_sample_grads."
            "batched_fisher_scores, which read gradients from module hooks"
        )
    scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in zip(names, weights, strict=True)}

    flags = {name: p.requires_grad for name, p in params.items()}
    was_training = hf.training
    try:
        for p in params.values():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        hf.eval()
        with torch.enable_grad():
            for sample in tqdm(samples, desc="fisher", unit="sample", disable=not progress):
                grads = torch.autograd.grad(sample_loss(hf, sample), weights)
                for name, grad in zip(names, grads, strict=True):
                    grad = grad.float()
                    scores[name].addcmul_(grad, grad)  # += grad**2 without a temporary
    finally:
        for name, p in params.items():
            p.requires_grad_(flags[name])
        hf.train(was_training)
    return scores


def _weights(names: Sequence[str], params: dict[str, nn.Parameter]) -> list[nn.Parameter]:
    """The parameters called `names`, with an error naming any the model lacks."""
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"model has no parameters {missing[:3]}; its anatomy does not match its modules")
    return [params[n] for n in names]


def model_fingerprint(model: ModelLike) -> str:
    """sha256 of the config, dtype, parameter count and a strided sample of every linear weight.

    The weight sample tells apart checkpoints that share a config (e.g. a fine-tune); it reads
    a few hundred values per matrix, so it costs milliseconds.
    """
    loaded = as_model(model)
    hf = loaded.hf
    digest = hashlib.sha256(config_digest(hf).encode())
    digest.update(str(next(hf.parameters()).dtype).encode())
    digest.update(str(sum(p.numel() for p in hf.parameters())).encode())
    for name in loaded.anatomy.linear_weights().values():
        flat = stored_value(hf, name).reshape(-1)
        strided = flat[:: max(1, flat.numel() // 256)].float().cpu().contiguous()
        digest.update(name.encode())
        digest.update(strided.numpy().tobytes())
    return digest.hexdigest()


def samples_digest(samples: Sequence[LossSample]) -> str:
    """sha256 over every sample's token ids and loss mask (order matters)."""
    digest = hashlib.sha256(str(len(samples)).encode())
    for sample in samples:
        ids = sample.input_ids.detach().to("cpu", torch.int64).contiguous()
        mask = sample.loss_mask.detach().to("cpu", torch.uint8).contiguous()
        digest.update(str(ids.numel()).encode())
        digest.update(ids.numpy().tobytes())
        digest.update(mask.numpy().tobytes())
    return digest.hexdigest()


def fisher_cache_folder(model: ModelLike, samples: Sequence[LossSample], key_parts: dict[str, Any]) -> Path:
    """Where `cached_fisher_scores` keeps the scores: `cache_root()/fisher/<sha256>/`, a verified
    cache folder (`steerscope.cache.cached_folder`) holding `SCORES_FILE`."""
    key = {
        "format": _FORMAT,
        "model": model_fingerprint(model),
        "samples": samples_digest(samples),
        "key_parts": key_parts,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return cache_root() / "fisher" / digest


FISHER_METHODS = ("batched", "loop")


def cached_fisher_scores(
    model: ModelLike,
    samples: Sequence[LossSample],
    key_parts: dict[str, Any],
    progress: bool = True,
    method: str = "batched",
) -> dict[str, Tensor]:
    """`fisher_scores`, read from the disk cache when the same model, samples and key were scored.

    `method` computes a missing entry: "batched" (`kernels.per_sample_grads.batched_fisher_scores`,
    several samples per pass, the default) or "loop" (`fisher_scores`, one sample per pass). The
    two agree to float rounding (1e-6 relative on tiny models, tested; ~3e-4 on Gemma 3 270M, where
    an fp64 check puts the loop further from exact), so the method is not part of the cache key.
    `key_parts` (json-able, e.g. {"dataset": "tom-v2", "split": "train"}) is part of the key.
    The entry is a verified cache folder: written atomically, hashed in full, and recomputed
    (with a warning) when any byte of it changed.
    Tensors come back on the devices of their weights.
    """
    if method not in FISHER_METHODS:
        raise InputError(f"method must be one of {FISHER_METHODS}, got {method!r}")
    loaded = as_model(model)
    params = dict(loaded.hf.named_parameters())
    names = list(loaded.anatomy.linear_weights().values())
    computed: dict[str, Tensor] = {}

    def build(tmp: Path) -> None:
        score = batched_fisher_scores if method == "batched" else fisher_scores
        computed.update(score(loaded, samples, progress=progress))
        metadata = {"format": _FORMAT, "key_parts": json.dumps(key_parts, sort_keys=True, default=str)}
        save_file(
            {n: s.cpu().contiguous() for n, s in computed.items()}, tmp / SCORES_FILE, metadata=metadata
        )

    folder, built = cached_folder(fisher_cache_folder(loaded, samples, key_parts), build)
    if built:
        return computed
    stored = load_file(folder / SCORES_FILE)
    if set(stored) != set(names) or any(stored[n].shape != params[n].shape for n in names):
        raise RuntimeError(
            f"{folder / SCORES_FILE} is intact but scores other weights than this model's seven linear "
            f"maps; delete {folder} to recompute it"
        )
    return {n: stored[n].to(execution_device(loaded.hf, n)) for n in names}
