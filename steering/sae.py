"""Sparse autoencoders on a model's residual stream: build once into the cache, load, encode.

`train_saes(model, sites, settings, texts)` trains one BatchTopK SAE per site (`steerscope.
steering.sae_training`) on the caller's texts, cut into windows and captured once for every site
(`steerscope.steering.sae_data`), and reports its quality (`steerscope.steering.sae_quality`):
held-out FVU, L0, dead fraction and CE loss recovered. Each SAE lands in cache_root()/sae/<key>
(key: model config, weights and dtype, site, settings, texts, trainer and window versions) as an
ordinary sae-lens folder (`cfg.json`, `sae_weights.safetensors`, loadable with
`sae_lens.SAE.load_from_disk`) with its report `steerscope-sae.json`, verified on every load like
every cached folder; a killed build resumes from its verified activation shards and training
checkpoints in cache_root()/sae-work/<key>, which is removed once every SAE of the build is in
place.
`training_texts(data)` assembles the default texts from a data suite's `text` and `conflicts`
kinds. `load_sae` also takes a sae-lens pretrained `release/sae_id`.

Defaults: expansion 8, k = d_model / 10 (d_sae 5120, k 64 on Gemma 3 270M), one pass over at most
1.1M training tokens in batches of 2048 at lr 1e-3. Measured SAEs (fewer tokens, more epochs) are
in docs/results.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from steerscope.cache import cache_root, cached_folder, is_intact, write_atomic
from steerscope.capture import capture
from steerscope.data.suite import DataSuite
from steerscope.errors import InputError
from steerscope.kernels.sae_edit import encode_local, sae_parts
from steerscope.model import ModelLike, as_model, config_digest
from steerscope.provenance import model_weights
from steerscope.sites import Site, resolve_sites
from steerscope.steering.sae_data import capture_shards, last_windows, load_site, split_windows, token_windows
from steerscope.steering.sae_quality import ce_loss_recovered, lm_loss, sae_quality
from steerscope.steering.sae_training import TRAINER_VERSION, TrainSchedule, train_batch_topk

REPORT = "steerscope-sae.json"
Positions = Literal["all", "last"]
POSITIONS: tuple[Positions, ...] = ("all", "last")
DATA_VERSION = 1  # part of the work folder's key: changed windows or shards are never reused
RESIDUAL_KINDS = ("resid_pre", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class SAETrainSettings:
    """One BatchTopK SAE per site: d_sae = `expansion` x d_model, mean L0 `k` (None: a tenth of
    d_model, 64 on Gemma 3 270M; `for_model` fills it in), `epochs` passes
    over the training tokens in batches of `batch_size` at peak `lr`. Texts become windows of
    `context` tokens, at most `max_tokens` in all (None: every window); `holdout` of the windows
    are held out for FVU / L0 / dead fraction, the first `ce_windows` of those for CE loss recovered.

    `positions` "all" trains on every token of every window (as SAEs are trained on pretraining
    text); "last" on the last token of each text alone (`sae_data.last_windows`): given the
    experiments' prompts alone (`training_texts(..., documents=False)`), the last prompt token
    SpARE reads and edits, whose directions an SAE of every position mixes with what the other
    tokens carry (docs/results.md, organism:sources-planted).
    A "last" SAE has no CE loss recovered (no next token is scored after a text's last one).
    """

    expansion: int = 8
    k: int | None = None
    epochs: float = 1.0
    batch_size: int = 2048
    lr: float = 1e-3
    context: int = 128
    max_tokens: int | None = 1_100_000
    holdout: float = 0.05
    ce_windows: int = 24
    seed: int = 0
    positions: Positions = "all"

    def __post_init__(self) -> None:
        for name in ("epochs", "lr", "holdout"):  # 4 and 4.0 must name the same cached SAE
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("expansion", "k", "batch_size", "context", "ce_windows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InputError(f"SAETrainSettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.epochs <= 0 or self.lr <= 0:
            raise InputError(f"SAETrainSettings.epochs and lr must be positive, got {self.epochs}, {self.lr}")
        if not 0 < self.holdout < 1:
            raise InputError(f"SAETrainSettings.holdout must be in (0, 1), got {self.holdout}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise InputError(f"SAETrainSettings.max_tokens must be positive or None, got {self.max_tokens}")
        if self.positions not in POSITIONS:
            raise InputError(f"SAETrainSettings.positions must be one of {POSITIONS}, got {self.positions!r}")

    def for_model(self, model: ModelLike) -> SAETrainSettings:
        """These settings with k filled in for the model's width."""
        return replace(self, k=self.k or max(1, as_model(model).anatomy.d_model // 10))

    def schedule(self, n_tokens: int) -> TrainSchedule:
        """The training schedule for `n_tokens` training tokens (k must be filled in)."""
        if self.k is None:
            raise InputError("SAETrainSettings.k is None: call settings.for_model(model) first")
        steps = max(1, math.ceil(self.epochs * n_tokens / self.batch_size))
        return TrainSchedule(steps, self.batch_size, self.lr, self.k, self.expansion, self.seed)


@dataclass
class TrainedSAE:
    """An SAE with where it is cached, whether this call built it, and its report (quality,
    token counts, settings)."""

    sae: Any
    folder: Path
    built: bool
    report: dict[str, Any]


# ---------------------------------------------------------------- texts


def training_texts(
    data: DataSuite, demos: int = 3, seeds: Sequence[int] = (0, 1), documents: bool = True
) -> list[str]:
    """Default SAE training texts of a data suite: the documents of its `text` kind (with the
    Python docstrings added to steerscope's own offline text, which an organism's word-level
    tokenizer could not read anyway), then the prompts of its `conflicts` kind for every record,
    push, conflict or not, and seed, asked as the experiments ask them. The prompts carry no
    behaviour labels, so held-out facts leak nothing. A user's `text` or `conflicts` data replaces
    the suite's, so it flows into the SAE as into the experiment. `documents=False`: the prompts
    alone (an SAE of last prompt tokens, `positions="last"`)."""
    from steerscope.data.conflicts import PUSHES
    from steerscope.data.defaults import NATURAL
    from steerscope.data.docstrings import python_docstrings

    text = data.need("text")
    texts = list(text.texts()) if documents else []
    if documents and text.source == NATURAL:
        texts += python_docstrings()
    prompts: dict[str, None] = {}
    conflicts = data.conflicts
    if conflicts is not None:
        pushes = tuple(conflicts.cues) if conflicts.cues is not None else PUSHES
        for seed in seeds:
            for record in conflicts.candidates(None, seed):
                for push in pushes:
                    for conflict in (True, False):
                        prompts.setdefault(
                            conflicts.knowledge_prompt(record, push, conflict, demos, seed), None
                        )
    return texts + list(prompts)


# ---------------------------------------------------------------- training


def to_sae_lens(weights: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Any:
    """A sae-lens `JumpReLUSAE` from exported BatchTopK weights (one threshold for every feature)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    d_sae, d_in = weights["W_dec"].shape
    config = JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae)
    for key, value in (metadata or {}).items():
        config.metadata[key] = value
    sae = JumpReLUSAE(config)
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
            getattr(sae, name).copy_(weights[name])
        sae.threshold.fill_(weights["threshold"])
    return sae


def sae_from_activations(
    acts: Tensor, settings: SAETrainSettings = SAETrainSettings(), metadata: dict | None = None
) -> Any:
    """The same trainer as `train_saes` on acts [n_tokens, d_model] held in memory (no cache, no
    checkpoints); returns a sae-lens `JumpReLUSAE` that reads and writes raw activations. k None:
    a tenth of d_model."""
    if acts.dim() != 2:
        raise InputError(f"acts must be [n_tokens, d_model], got shape {tuple(acts.shape)}")
    settings = replace(settings, k=settings.k or max(1, acts.shape[1] // 10))
    return to_sae_lens(train_batch_topk(acts, settings.schedule(acts.shape[0])), metadata)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 of the training texts, as the SAE cache key holds it."""
    return _digest(list(texts))


def model_key(model: ModelLike) -> dict[str, Any]:
    """What identifies a model's activations in the SAE cache keys: its config, its weights
    (`provenance.model_weights`: a rebuilt organism or another checkpoint of one config has other
    activations) and its dtype (a bf16 model's too)."""
    loaded = as_model(model)
    return {
        "model": config_digest(loaded.hf),
        "weights": model_weights(loaded)["xxh3_128"],
        "dtype": model_dtype(loaded),
    }


def sae_folder(model: ModelLike, site: str | Site, settings: SAETrainSettings, texts: Sequence[str]) -> Path:
    """cache_root()/sae/<key>, key over the model (`model_key`), site, settings (k filled in),
    texts, and the trainer and window versions."""
    key = _digest(
        {
            **model_key(model),
            "site": str(Site.parse(site)),
            "settings": _keyed(settings.for_model(model)),
            "texts": texts_digest(texts),
            "trainer": TRAINER_VERSION,
            "data_version": DATA_VERSION,
        }
    )
    return cache_root() / "sae" / key[:24]


def _keyed(settings: SAETrainSettings) -> dict[str, Any]:
    """The settings as cache keys take them: `positions` only when not "all", so the SAEs cached
    before it existed keep their keys."""
    fields = asdict(settings)
    if fields["positions"] == "all":
        del fields["positions"]
    return fields


def model_dtype(model: ModelLike) -> str:
    """The dtype of the model's first parameter, e.g. 'torch.float32'."""
    return str(next(as_model(model).hf.parameters()).dtype)


def residual_sites(model: ModelLike, sites: Sequence[str | Site]) -> list[str]:
    """Validated site strings; SAEs are built on [batch, pos, d_model] sites only."""
    if isinstance(sites, (str, Site)) or not sites:
        raise InputError("sites must be a non-empty list of sites, e.g. ['L9.resid_post']")
    resolved = resolve_sites(list(sites), as_model(model).anatomy)
    wrong = [str(s) for s in resolved if s.kind not in RESIDUAL_KINDS or s.head is not None]
    if wrong:
        raise InputError(f"SAEs are built on residual-width sites ({', '.join(RESIDUAL_KINDS)}); got {wrong}")
    return list(dict.fromkeys(str(s) for s in resolved))


def train_saes(
    model: ModelLike,
    sites: Sequence[str | Site],
    settings: SAETrainSettings,
    texts: Sequence[str],
    progress: bool = True,
) -> dict[str, TrainedSAE]:
    """SAEs by site from the cache, training the missing ones: one capture pass for all of them
    into resumable shards, then per site training (resumable), evaluation and an atomic write."""
    loaded = as_model(model)
    keys = residual_sites(loaded, sites)
    if isinstance(texts, str) or not texts:
        raise InputError("texts must be a non-empty list of strings (see training_texts)")
    settings = settings.for_model(loaded)
    folders = {site: sae_folder(loaded, site, settings, texts) for site in keys}
    missing = [site for site in keys if not is_intact(folders[site])]
    if missing:
        work = cache_root() / "sae-work" / _work_key(loaded, missing, settings, texts)
        _build_missing(loaded, missing, texts, settings, folders, work, progress)
        shutil.rmtree(work, ignore_errors=True)
    return {
        site: TrainedSAE(
            load_sae(folders[site]),
            folders[site],
            site in missing,
            json.loads((folders[site] / REPORT).read_text()),
        )
        for site in keys
    }


def _work_key(model: ModelLike, sites: list[str], settings: SAETrainSettings, texts: Sequence[str]) -> str:
    """The work folder of one capture pass: model, sites, texts and what decides the windows (so
    changing a training setting resumes from the same shards)."""
    names = ("context", "max_tokens", "holdout", "seed", "positions")
    capture = {name: value for name, value in _keyed(settings).items() if name in names}
    key = {**model_key(model), "sites": sites, "texts": texts_digest(texts), **capture}
    return _digest({**key, "data_version": DATA_VERSION})[:24]


def training_windows(
    model: ModelLike, texts: Sequence[str], settings: SAETrainSettings
) -> dict[str, list[str]]:
    """The held-out ("eval") and "train" windows an SAE of `settings` is built from. An SAE of
    last tokens (one token per text) refuses texts that give fewer training windows than a batch;
    cheap (tokenizing), so experiments call it before their expensive phases."""
    cut = last_windows if settings.positions == "last" else token_windows
    windows = split_windows(
        cut(as_model(model).tokenizer, texts, settings.context, settings.max_tokens, settings.seed),
        settings.holdout,
    )
    if settings.positions == "last" and len(windows["train"]) < settings.batch_size:
        raise InputError(
            f"positions='last' trains on one token per text: {len(windows['train'])} training texts "
            f"are fewer than batch_size={settings.batch_size}; lower the batch size or give more texts"
        )
    return windows


def _build_missing(
    model: ModelLike,
    sites: list[str],
    texts: Sequence[str],
    settings: SAETrainSettings,
    folders: dict[str, Path],
    work: Path,
    progress: bool,
) -> None:
    last = settings.positions == "last"
    windows = training_windows(model, texts, settings)
    start = time.perf_counter()
    shards = {
        split: capture_shards(model, windows[split], sites, work, split, progress=progress, last=last)
        for split in windows
    }
    capture_seconds = time.perf_counter() - start
    ce_texts = windows["eval"][: settings.ce_windows]
    clean = None if last else lm_loss(model, ce_texts)
    for site in sites:

        def build(tmp: Path, site: str = site) -> None:
            train = load_site(work, "train", site, shards["train"])
            n_train, schedule = train.shape[0], settings.schedule(train.shape[0])
            start = time.perf_counter()
            checkpoints = work / f"train-{site}-{_digest(asdict(schedule))[:12]}"
            trained = train_batch_topk(train, schedule, checkpoints, progress, f"SAE {site}")
            seconds = time.perf_counter() - start
            sae = to_sae_lens(trained, {"hook_name": site, "model_name": model.source})
            del train
            held_out = load_site(work, "eval", site, shards["eval"])
            report = {
                "site": site,
                "model": model.source,
                **sae_quality(sae, held_out),
                **(
                    {"ce_loss_recovered": None}
                    if last
                    else ce_loss_recovered(model, sae, site, ce_texts, clean=clean)
                ),
                "train_tokens": n_train,
                "held_out_tokens": held_out.shape[0],
                "train_windows": len(windows["train"]),
                "ce_windows": len(ce_texts),
                "steps": schedule.steps,
                "train_seconds_this_run": round(seconds, 1),
                "capture_seconds_this_run": round(capture_seconds, 1),
                "resumed_from_step": trained["resumed_from"],
                "final_losses": trained["losses"][-5:],
                "settings": asdict(settings),
                "n_texts": len(texts),
                "trainer_version": TRAINER_VERSION,
            }
            save_sae(sae, tmp)
            write_atomic(tmp / REPORT, json.dumps(report, indent=1))

        cached_folder(folders[site], build)


def saes_by_site(trained: Mapping[str, TrainedSAE]) -> dict[str, Any]:
    """{site: sae} from `train_saes` output, the form `spare_edits` takes."""
    return {site: t.sae for site, t in trained.items()}


# ---------------------------------------------------------------- codes, save, load


def encode_pre(sae: Any, h: Tensor) -> Tensor:
    """SpARE's feature codes z [..., d_sae] of residual vectors h [..., d_model]: the authors'
    `sae.pre_acts(h)` (see `steerscope.steering.spare`).

    z = act(W_enc^T (h - b_in) + b_enc) with act the SAE's per-feature nonlinearity: JumpReLU for
    the SAEs `train_saes` makes and for Gemma Scope (z then equals `sae.encode(h)`), ReLU for
    standard SAEs, and for TopK SAEs ReLU *before* the top-k, as the authors' TopK SAEs define
    `pre_acts` (the fused edit computes only the selected features and cannot know the top k).
    """
    return encode_local(sae_parts(sae), h)


@torch.no_grad()
def last_token_codes(
    model: ModelLike, saes_by_site: Mapping[str, Any], prompts: list[str]
) -> dict[str, Tensor]:
    """SAE codes z [n_prompts, d_sae] at the last prompt token of each prompt, by site."""
    got = capture(model, prompts, list(saes_by_site), reduce="last", progress=False)
    return {site: encode_pre(sae, got[site]) for site, sae in saes_by_site.items()}


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
        raise InputError(f"{source!r} is neither an SAE folder nor a 'release/sae_id' of sae-lens")
    if offline & {"1", "true", "yes", "on"}:
        raise InputError(
            f"loading the pretrained SAE {release!r} / {sae_id!r} needs the Hugging Face hub, which is "
            "set offline (HF_HUB_OFFLINE); build one with steerscope.steering.sae.train_saes instead"
        )
    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except Exception as error:  # unknown release, network down
        raise InputError(f"could not load pretrained SAE {release!r} / {sae_id!r}: {error}") from error
