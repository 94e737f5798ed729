"""Sparse autoencoders on a model's residual stream: train (with sae-lens), cache, load, measure.

Training uses sae-lens's own `BatchTopKTrainingSAE` and `SAETrainer`, fed from steerscope's
`capture` (real tokens only; BOS dropped; shuffled; 10% held out). BatchTopK (Bussmann et al.
2024) because it sets the mean L0 to k by construction, so a few CPU minutes go to
reconstruction only (an L1 SAE needs a coefficient sweep to land on an L0 target), and because
sae-lens saves it as a JumpReLU SAE with one learned threshold: its activations are then per
feature, with no competition between features, which is what lets the SpARE edit encode only
the selected features (`steerscope.kernels.sae_edit`) and still equal the SAE's own `encode`.

Normalisation: Gemma 3's residual norm is ~6e3, so inputs are scaled by sae-lens's
`normalize_activations="expected_average_only_in"` (mean input norm sqrt(d_model)); the trainer
folds the factor back into W_enc, W_dec and b_dec at the end, so the saved SAE reads and writes
raw activations. b_dec starts at the (scaled) mean activation so the first steps are spent on
features, not on the offset.

Saved SAEs are ordinary sae-lens folders (`cfg.json`, `sae_weights.safetensors`), loadable with
`sae_lens.SAE.load_from_disk`; `load_sae` also takes a pretrained `release/sae_id`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from steerscope.cache import cache_root, cached_folder, is_intact, write_atomic
from steerscope.capture import capture
from steerscope.data.generic import generic_windows
from steerscope.kernels.sae_edit import encode_local, sae_parts
from steerscope.model import as_model, config_digest
from steerscope.sites import Site

REPORT = "steerscope-sae.json"


@dataclass(frozen=True)
class SAETrainSettings:
    """How to train one BatchTopK SAE: mean L0 `k`, d_sae = `expansion` * d_model, `steps`
    batches of `batch_size` activations (epochs repeat)."""

    expansion: int = 8
    k: int = 64
    steps: int = 300
    batch_size: int = 1024
    lr: float = 5e-4
    holdout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("expansion", "k", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SAETrainSettings.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.holdout < 1:
            raise ValueError(f"SAETrainSettings.holdout must be in (0, 1), got {self.holdout}")
        if self.lr <= 0:
            raise ValueError(f"SAETrainSettings.lr must be positive, got {self.lr}")


@dataclass
class TrainedSAE:
    """An SAE with where it is cached, whether it was trained by this call, and its report
    (held-out `fvu`, `l0`, `train_seconds`, token counts)."""

    sae: Any
    folder: Path
    built: bool
    report: dict[str, Any]


# ---------------------------------------------------------------- data


def training_texts(
    model: Any, texts: Sequence[str], n_windows: int = 256, window: int = 128, seed: int = 0
) -> list[str]:
    """`n_windows` windows (split "fisher") of the documents `texts`, decoded for `capture`.

    The window shrinks to the shortest document: an organism's generic texts are short paragraphs
    of the length it was trained on, so every paragraph still gives a window and none runs past
    the positions the organism has seen. The natural offline documents are far longer.
    """
    loaded = as_model(model)
    shortest = min(len(ids) for ids in loaded.tokenizer(texts, add_special_tokens=False)["input_ids"])
    ids = generic_windows(
        loaded.tokenizer, n_windows, window=min(window, shortest), seed=seed, split="fisher", texts=texts
    )
    return [loaded.tokenizer.decode(row) for row in ids]


def token_activations(
    model: Any, prompts: Sequence[str], sites: Sequence[str | Site], batch_size: int = 8
) -> dict[str, Tensor]:
    """Residual activations [n_tokens, d_model] at each site, over real non-BOS tokens of `prompts`."""
    loaded = as_model(model)
    got = capture(loaded, list(prompts), sites, batch_size=batch_size, progress=False)
    keep = got.mask.clone()
    bos = loaded.tokenizer.bos_token_id
    if bos is not None:
        keep &= got.token_ids != bos
    return {site: act[keep].float() for site, act in got.activations.items()}


def split_holdout(acts: Tensor, holdout: float, seed: int) -> tuple[Tensor, Tensor]:
    """Shuffle acts [n, d] and split into (train, held out) with `holdout` of the rows held out."""
    order = torch.randperm(acts.shape[0], generator=torch.Generator().manual_seed(seed))
    n_eval = max(1, round(holdout * acts.shape[0]))
    return acts[order[n_eval:]], acts[order[:n_eval]]


def _batches(acts: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Endless shuffled batches [batch_size, d] of acts, a fresh permutation each epoch."""
    generator = torch.Generator().manual_seed(seed)
    size = min(batch_size, acts.shape[0])
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for start in range(0, acts.shape[0] - size + 1, size):
            yield acts[order[start : start + size]]


# ---------------------------------------------------------------- training and quality


def train_sae(
    acts: Tensor, settings: SAETrainSettings = SAETrainSettings(), metadata: dict | None = None
) -> Any:
    """Train a BatchTopK SAE on acts [n, d_model] with sae-lens; returns the inference SAE
    (a sae-lens `JumpReLUSAE`, as `save_inference_model` writes and `SAE.load_from_disk` reads),
    with decoder-norm rescaling and input normalisation folded into its weights.
    """
    import tempfile

    from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    if acts.dim() != 2:
        raise ValueError(f"acts must be [n_tokens, d_model], got shape {tuple(acts.shape)}")
    acts = acts.float()
    d_in = acts.shape[1]
    torch.manual_seed(settings.seed)
    config = BatchTopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=settings.expansion * d_in,
        k=settings.k,
        topk_threshold_lr=0.05,  # the threshold is an EMA; a few hundred steps need a faster one
        normalize_activations="expected_average_only_in",
    )
    for key, value in (metadata or {}).items():
        config.metadata[key] = value
    sae = BatchTopKTrainingSAE(config)
    decay = max(1, settings.steps // 5)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=settings.steps * settings.batch_size,
            train_batch_size_samples=settings.batch_size,
            lr=settings.lr,
            lr_end=settings.lr,
            lr_decay_steps=decay,  # constant, then linear to 0 over the last fifth
            dead_feature_window=max(10, settings.steps // 10),
            feature_sampling_window=settings.steps + 1,
        ),
        sae,
        _batches(acts, settings.batch_size, settings.seed),
    )
    # Set the scale ourselves (fit() keeps a preset factor) so b_dec can start at the scaled mean.
    scale = math.sqrt(d_in) / acts.norm(dim=-1).mean().item()
    trainer.activation_scaler.scaling_factor = scale
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0) * scale)
    _quiet_fit(trainer)
    with tempfile.TemporaryDirectory() as tmp:
        sae.save_inference_model(tmp)
        return SAE.load_from_disk(tmp)


def _quiet_fit(trainer: Any) -> None:
    """`trainer.fit()` without its progress bars (sae-lens offers no switch for them)."""
    from sae_lens.training import activation_scaler, sae_trainer

    bar = sae_trainer.tqdm
    quiet = functools.partial(bar, disable=True)
    sae_trainer.tqdm = activation_scaler.tqdm = quiet
    try:
        trainer.fit()
    finally:
        sae_trainer.tqdm = activation_scaler.tqdm = bar


@torch.no_grad()
def sae_quality(sae: Any, activations: Tensor, batch_size: int = 4096) -> dict[str, float]:
    """Held-out quality of `sae` on activations [n, d_model].

    fvu = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance unexplained, 0 is
    perfect, 1 is no better than the mean); l0 = mean number of nonzero feature activations
    (`sae.encode`, i.e. after TopK) per token.
    """
    x = activations.reshape(-1, activations.shape[-1]).float()
    error, active = 0.0, 0.0
    for chunk in x.split(batch_size):
        features = sae.encode(chunk)
        error += (sae.decode(features) - chunk).pow(2).sum().item()
        active += (features != 0).sum().item()
    variance = (x - x.mean(0)).pow(2).sum().item()
    return {"fvu": error / variance if variance > 0 else float("nan"), "l0": active / x.shape[0]}


def encode_pre(sae: Any, h: Tensor) -> Tensor:
    """SpARE's feature codes z [..., d_sae] of residual vectors h [..., d_model].

    z = act(W_enc^T (h - b_dec) + b_enc): the SAE's feature activations, as in the paper, with
    act the per-feature nonlinearity (JumpReLU for the SAEs `train_sae` makes and for Gemma
    Scope; ReLU for standard SAEs), so z equals `sae.encode(h)` for those. Selection, target
    means and the edit all use this one quantity; it is never negative. For a TopK SAE the
    top-k competition is not per feature and is left out: z is then ReLU of the pre-activation,
    equal to `sae.encode` on the features in the top k and the would-be value elsewhere (the
    fused edit computes only the selected features and cannot know the top k).
    """
    return encode_local(sae_parts(sae), h)


# ---------------------------------------------------------------- save, load, cache


def save_sae(sae: Any, folder: str | Path) -> Path:
    """Write `sae` as a sae-lens folder (cfg.json + sae_weights.safetensors)."""
    folder = Path(folder)
    sae.save_model(folder)
    return folder


def load_sae(source: str | Path, device: str = "cpu") -> Any:
    """Load an SAE from a sae-lens folder, or a pretrained sae-lens `release/sae_id` (online only)."""
    from sae_lens import SAE

    path = Path(source)
    if path.is_dir():
        return SAE.load_from_disk(path, device=device)
    release, _, sae_id = str(source).partition("/")
    offline = {os.environ.get(v, "").lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if not sae_id:
        raise ValueError(f"{source!r} is neither an SAE folder nor a 'release/sae_id' of sae-lens")
    if offline & {"1", "true", "yes", "on"}:
        raise RuntimeError(
            f"loading the pretrained SAE {release!r} / {sae_id!r} needs the Hugging Face hub, which is "
            "set offline (HF_HUB_OFFLINE); train one with steerscope.steering.sae.train_saes instead"
        )
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except Exception as error:  # unknown release, network down
        raise RuntimeError(f"could not load pretrained SAE {release!r} / {sae_id!r}: {error}") from error


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sae_folder(model: Any, site: str | Site, settings: SAETrainSettings, prompts: Sequence[str]) -> Path:
    """cache_root()/sae/<key>: key over model config digest, site, settings, data and sae-lens version."""
    import sae_lens

    loaded = as_model(model)
    key = _digest(
        {
            "model": config_digest(loaded.hf),
            "site": str(Site.parse(site)),
            "settings": asdict(settings),
            "data": _digest(list(prompts)),
            "sae_lens": sae_lens.__version__,
        }
    )
    return cache_root() / "sae" / key[:24]


def train_saes(
    model: Any, sites: Sequence[str | Site], settings: SAETrainSettings, texts: Sequence[str]
) -> dict[str, TrainedSAE]:
    """Trained SAEs by site, from the cache (keyed by model, site, settings and `texts`) or trained
    now on the activations of every token of `texts` (e.g. `training_texts` windows plus task prompts).

    One capture serves every site that needs training; each SAE is written atomically.
    """
    loaded = as_model(model)
    texts = list(texts)
    keys = [str(Site.parse(site)) for site in sites]
    folders = {site: sae_folder(loaded, site, settings, texts) for site in keys}
    missing = [site for site in keys if not is_intact(folders[site])]
    acts = token_activations(loaded, texts, missing) if missing else {}
    results: dict[str, TrainedSAE] = {}
    for site in keys:

        def build(tmp: Path, site: str = site) -> None:
            train, held_out = split_holdout(acts[site], settings.holdout, settings.seed)
            start = time.perf_counter()
            sae = train_sae(train, settings, metadata={"hook_name": site, "model_name": loaded.source})
            seconds = time.perf_counter() - start
            save_sae(sae, tmp)
            report = {
                **sae_quality(sae, held_out),
                "train_seconds": seconds,
                "train_tokens": train.shape[0],
                "held_out_tokens": held_out.shape[0],
                "site": site,
                "settings": asdict(settings),
            }
            write_atomic(tmp / REPORT, json.dumps(report, indent=1))

        folder, built = cached_folder(folders[site], build)
        report = json.loads((folder / REPORT).read_text())
        results[site] = TrainedSAE(sae=load_sae(folder), folder=folder, built=built, report=report)
    return results


def saes_by_site(trained: Mapping[str, TrainedSAE]) -> dict[str, Any]:
    """{site: sae} from `train_saes` output, the form `spare_edits` takes."""
    return {site: t.sae for site, t in trained.items()}
