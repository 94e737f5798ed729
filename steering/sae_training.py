"""Train a BatchTopK sparse autoencoder on stored activations, with checkpoints a killed run resumes from.

BatchTopK (Bussmann et al. 2024, arXiv 2412.06410): codes are ReLU(W_enc^T (x - b_dec) + b_enc),
of which the batch keeps its batch_size x k largest entries, so the mean L0 is k by construction
and a token may use more or fewer features than k. At inference one threshold theta replaces the
batch rule (JumpReLU: keep a code where it exceeds theta), set to the mean over calibration
batches of the smallest code each batch keeps, as the paper does; the SAE is then exported as a
sae-lens `JumpReLUSAE`, whose activations are per feature (what SpARE's edit needs).

Loss (Gao et al. 2024, arXiv 2406.04093, as EleutherAI's `sae` trainer): the fraction of variance
unexplained of the batch, plus 1/32 of the AuxK loss, in which the k_aux = d_model / 2 largest
pre-activations of the dead features (no activation over the last `DEAD_AFTER_TOKENS` training
tokens) reconstruct the main residual, scaled by min(n_dead / k_aux, 1). Decoder rows are kept at
unit norm; W_enc starts as W_dec^T and b_dec at the mean input. Inputs are scaled by
sqrt(d_model) / mean ||x|| (Gemma 3's residual norm is ~6e3); the export folds the scale back
so the saved SAE reads and writes raw activations with unit-norm decoder rows.

Adam, lr warmed up linearly over the first 2% of steps and decayed linearly to 0 over the last
20%. Batches are drawn without replacement from a fixed permutation per epoch, so step s always
sees the same tokens and a resumed run is bit-identical to an uninterrupted one (for a given
number of torch threads). Checkpoints are safetensors (weights, Adam moments, dead-feature
counters) beside a JSON of the state (step, scale, schedule) and the tensors' XXH3-128; one that
fails verification is deleted with a warning and training goes on from an earlier one or step 0.
Nothing is pickled.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.cache import write_atomic
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest

TRAINER_VERSION = 4  # in every SAE's cache key and checkpoint: a changed trainer never reuses old work
AUX_COEFFICIENT = 1 / 32
DEAD_AFTER_TOKENS = 200_000
CALIBRATION_BATCHES = 16
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoint-<step>.safetensors and its .json
KEEP_CHECKPOINTS = 2
ADAM_KEYS = ("exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class TrainSchedule:
    """How long and how fast: `steps` Adam steps on batches of `batch_size` tokens at peak `lr`."""

    steps: int
    batch_size: int
    lr: float
    k: int
    expansion: int
    seed: int = 0
    checkpoint_every: int = 100


class BatchTopK(torch.nn.Module):
    """The SAE being trained, in scaled input units: W_enc [d, s], b_enc [s], W_dec [s, d], b_dec [d]."""

    def __init__(self, d_in: int, d_sae: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        w_dec = F.normalize(torch.randn(d_sae, d_in, generator=generator), dim=-1)
        self.W_dec = torch.nn.Parameter(w_dec)
        self.W_enc = torch.nn.Parameter(w_dec.T.contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))

    def pre(self, x: Tensor) -> Tensor:
        """ReLU pre-activations [n, s] of scaled inputs x [n, d], in float32: a bfloat16 product is
        2x faster only on CPUs with AVX-512 BF16, 18x slower on AVX2 ones (measured: 14.5 vs 0.8 s
        per step at d_sae 5120, batch 2048), and its rounding differs between machines. b_dec
        learns through the decoder only, so the backward pass is one product, for W_enc."""
        return ((x - self.b_dec.detach()) @ self.W_enc).add(self.b_enc).relu()

    def decode_sparse(self, rows: Tensor, columns: Tensor, values: Tensor, n: int) -> Tensor:
        """sum of values * W_dec[columns] per row (rows sorted), without b_dec: [n, d]."""
        counts = torch.bincount(rows, minlength=n)
        offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
        return F.embedding_bag(columns, self.W_dec, offsets, mode="sum", per_sample_weights=values)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp(min=1e-12))


def batch_threshold(pre: Tensor, keep: int, guess: float) -> float:
    """The `keep`-th largest entry of pre [n, s]: scan only entries above half the previous
    threshold when there are enough of them (exact either way)."""
    flat = pre.flatten()
    candidates = flat[flat > guess / 2] if guess > 0 else flat
    if candidates.numel() < keep:
        candidates = flat
    return torch.kthvalue(candidates, candidates.numel() - keep + 1).values.item()


def training_loss(
    sae: BatchTopK, x: Tensor, k: int, dead: Tensor, guess: float
) -> tuple[Tensor, Tensor, float]:
    """(loss, fired [s] bool, threshold) for one batch of scaled inputs x [n, d]."""
    n = x.shape[0]
    pre = sae.pre(x)
    threshold = batch_threshold(pre.detach(), n * k, guess)
    # keep entries >= the threshold; when fewer than n * k codes are positive it is 0: keep those
    rows, columns = torch.nonzero(pre >= threshold if threshold > 0 else pre > 0, as_tuple=True)
    recon = sae.decode_sparse(rows, columns, pre[rows, columns], n) + sae.b_dec
    residual = x - recon
    variance = (x - x.mean(0)).pow(2).sum().clamp(min=1e-12)
    loss = residual.pow(2).sum() / variance
    n_dead = int(dead.sum())
    if n_dead:
        k_aux = min(x.shape[1] // 2, n_dead)
        dead_pre = pre.masked_fill(~dead, 0.0)
        values, indices = dead_pre.topk(k_aux, dim=1, sorted=False)
        aux = F.embedding_bag(indices, sae.W_dec, mode="sum", per_sample_weights=values)
        scale = min(n_dead / (x.shape[1] // 2), 1.0)
        loss = loss + AUX_COEFFICIENT * scale * (aux - residual.detach()).pow(2).sum() / variance
    fired = torch.zeros(pre.shape[1], dtype=torch.bool)
    fired[columns] = True
    return loss, fired, threshold


def learning_rate(step: int, schedule: TrainSchedule) -> float:
    """Linear warm-up over the first 2% of steps, constant, linear decay to 0 over the last 20%."""
    warmup = max(1, schedule.steps // 50)
    decay_start = int(schedule.steps * 0.8)
    factor = min(1.0, (step + 1) / warmup)
    if step >= decay_start:
        factor *= (schedule.steps - step) / (schedule.steps - decay_start)
    return schedule.lr * factor


@functools.lru_cache(maxsize=1)
def epoch_order(n_tokens: int, epoch: int, seed: int) -> Tensor:
    """The token permutation [n_tokens] of one epoch."""
    return torch.randperm(n_tokens, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def batch_at(acts: Tensor, step: int, schedule: TrainSchedule, scale: float) -> Tensor:
    """The scaled float32 batch [batch_size, d] of a step (epochs repeat the data)."""
    per_epoch = acts.shape[0] // schedule.batch_size
    epoch, index = divmod(step, per_epoch)
    order = epoch_order(acts.shape[0], epoch, schedule.seed)
    rows = order[index * schedule.batch_size : (index + 1) * schedule.batch_size]
    return acts[rows].float() * scale


def _state_tensors(sae: BatchTopK, optimizer: torch.optim.Adam, since_fired: Tensor) -> dict[str, Tensor]:
    tensors = {f"sae.{name}": p.detach().contiguous().clone() for name, p in sae.named_parameters()}
    for name, param in sae.named_parameters():
        state = optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                tensors[f"adam.{name}.{key}"] = state[key].clone()
    tensors["tokens_since_fired"] = since_fired.clone()
    return tensors


def _checkpoints(folder: Path) -> list[Path]:
    """The JSON files of the checkpoints in `folder`, newest first (names sort by step)."""
    return sorted(folder.glob(f"{CHECKPOINT_PREFIX}*.json"), reverse=True)


def _discard(meta_path: Path) -> None:
    meta_path.unlink(missing_ok=True)
    meta_path.with_suffix(".safetensors").unlink(missing_ok=True)


def save_checkpoint(
    folder: Path, sae: BatchTopK, optimizer: torch.optim.Adam, since_fired: Tensor, state: dict[str, Any]
) -> None:
    """Weights, Adam moments and counters as safetensors, then a JSON of the state and the
    tensors' XXH3-128 (written last: a checkpoint exists once its JSON does). Keeps the newest
    `KEEP_CHECKPOINTS`, so a kill while one is written leaves the previous one whole."""
    data = save_tensors(_state_tensors(sae, optimizer, since_fired))
    stem = folder / f"{CHECKPOINT_PREFIX}{state['step']:07d}"
    write_atomic(stem.with_suffix(".safetensors"), data)
    write_atomic(stem.with_suffix(".json"), json.dumps({"state": state, HASH_NAME: data_digest(data)}))
    for old in _checkpoints(folder)[KEEP_CHECKPOINTS:]:
        _discard(old)


class _BadCheckpoint(Exception):
    """A checkpoint that is damaged or was written for other data or settings (the message says which)."""


def _read_checkpoint(
    meta_path: Path, sae: BatchTopK, expected: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Verify one checkpoint (hash, identity, tensor shapes) without changing anything; raises
    `_BadCheckpoint`."""
    try:
        meta = json.loads(meta_path.read_text())
        state, digest = meta["state"], meta[HASH_NAME]
        data = meta_path.with_suffix(".safetensors").read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _BadCheckpoint(f"unreadable ({error.__class__.__name__}: {error})") from None
    if data_digest(data) != digest:
        raise _BadCheckpoint(f"its tensors do not match the {HASH_NAME} in its JSON")
    if not isinstance(state, dict) or any(state.get(key) != value for key, value in expected.items()):
        raise _BadCheckpoint("written for other activations or settings")
    if not (isinstance(state.get("step"), int) and 0 < state["step"] <= expected["schedule"]["steps"]):
        raise _BadCheckpoint(f"step {state.get('step')!r} outside 1..{expected['schedule']['steps']}")
    try:
        tensors = load_tensors(data)
    except SafetensorError as error:
        raise _BadCheckpoint(f"not valid safetensors ({error})") from None
    params = dict(sae.named_parameters())
    shapes = {f"sae.{n}": tuple(p.shape) for n, p in params.items()}
    shapes.update({f"adam.{n}.{key}": tuple(p.shape) for n, p in params.items() for key in ADAM_KEYS})
    shapes["tokens_since_fired"] = (params["b_enc"].shape[0],)
    if {name: tuple(t.shape) for name, t in tensors.items()} != shapes:
        raise _BadCheckpoint("its tensors do not fit this SAE")
    return state, tensors


def load_checkpoint(
    folder: Path, sae: BatchTopK, optimizer: torch.optim.Adam, expected: dict[str, Any]
) -> tuple[dict[str, Any], Tensor] | None:
    """Restore the newest checkpoint in `folder` that verifies into `sae` and `optimizer`; returns
    (state, tokens_since_fired), or None to start afresh. A checkpoint that fails verification is
    deleted with a warning saying why."""
    for meta_path in _checkpoints(folder):
        try:
            state, tensors = _read_checkpoint(meta_path, sae, expected)
        except _BadCheckpoint as problem:
            warnings.warn(
                f"discarding SAE checkpoint {meta_path}: {problem}; going on from an earlier one or from step 0",
                stacklevel=3,
            )
            _discard(meta_path)
            continue
        with torch.no_grad():
            for name, param in sae.named_parameters():
                param.copy_(tensors[f"sae.{name}"])
                optimizer.state[param] = {
                    "step": torch.tensor(float(state["step"])),
                    **{key: tensors[f"adam.{name}.{key}"] for key in ADAM_KEYS},
                }
        return state, tensors["tokens_since_fired"]
    return None


def train_batch_topk(
    acts: Tensor,
    schedule: TrainSchedule,
    folder: Path | None = None,
    progress: bool = False,
    description: str = "SAE",
) -> dict[str, Any]:
    """Train on acts [n_tokens, d] (any float dtype); returns the exported weights and threshold
    (raw units, see `export`) and training facts. With `folder`, checkpoints there every
    `schedule.checkpoint_every` steps and resumes from the last one."""
    if acts.dim() != 2 or acts.shape[0] < schedule.batch_size:
        raise InputError(
            f"acts must be [n_tokens, d_model] with at least batch_size={schedule.batch_size} rows, "
            f"got {tuple(acts.shape)}"
        )
    d_in = acts.shape[1]
    sae = BatchTopK(d_in, schedule.expansion * d_in, schedule.seed)
    optimizer = torch.optim.Adam(sae.parameters(), lr=schedule.lr, betas=(0.9, 0.999), eps=6.25e-10)
    sample = acts[epoch_order(acts.shape[0], 0, schedule.seed)[:16384]].float()
    scale = math.sqrt(d_in) / sample.norm(dim=-1).mean().item()
    with torch.no_grad():
        sae.b_dec.copy_(sample.mean(0) * scale)
    identity = {
        "schedule": asdict(schedule),
        "n_tokens": acts.shape[0],
        "d_in": d_in,
        "scale": scale,
        "trainer": TRAINER_VERSION,
    }
    state: dict[str, Any] = {**identity, "step": 0, "threshold": 0.0, "losses": []}
    since_fired = torch.zeros(sae.W_enc.shape[1], dtype=torch.long)
    resumed = load_checkpoint(folder, sae, optimizer, identity) if folder is not None else None
    if resumed is not None:
        state, since_fired = resumed
    start = state["step"]
    bar = tqdm(
        range(start, schedule.steps),
        desc=description,
        disable=not progress,
        initial=start,
        total=schedule.steps,
    )
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, schedule)
        x = batch_at(acts, step, schedule, scale)
        loss, fired, state["threshold"] = training_loss(
            sae, x, schedule.k, since_fired >= DEAD_AFTER_TOKENS, state["threshold"]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sae.normalise_decoder()
        since_fired = torch.where(fired, 0, since_fired + x.shape[0])
        state["step"] = step + 1
        if step % 10 == 0:
            state["losses"].append([step, round(loss.item(), 5)])
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if folder is not None and (
            state["step"] % schedule.checkpoint_every == 0 or state["step"] == schedule.steps
        ):
            save_checkpoint(folder, sae, optimizer, since_fired, state)
    return {
        **export(sae, scale, calibrate_threshold(sae, acts, schedule, scale)),
        "losses": state["losses"],
        "resumed_from": start,
    }


@torch.no_grad()
def calibrate_threshold(sae: BatchTopK, acts: Tensor, schedule: TrainSchedule, scale: float) -> float:
    """theta in scaled units: the mean, over the first batches of the first epoch, of the
    smallest code the batch rule keeps (Bussmann et al. 2024, section 3)."""
    per_epoch = acts.shape[0] // schedule.batch_size
    thresholds = []
    for step in range(min(CALIBRATION_BATCHES, per_epoch)):
        pre = sae.pre(batch_at(acts, step, schedule, scale))
        thresholds.append(batch_threshold(pre, pre.shape[0] * schedule.k, 0.0))
    return sum(thresholds) / len(thresholds)


@torch.no_grad()
def export(sae: BatchTopK, scale: float, threshold: float) -> dict[str, Any]:
    """Weights in raw input units with codes scaled by 1/scale, so decoder rows stay unit norm:
    W_enc, W_dec unchanged; b_enc, b_dec and the threshold divided by the scale."""
    return {
        "W_enc": sae.W_enc.detach().clone(),
        "b_enc": sae.b_enc.detach() / scale,
        "W_dec": sae.W_dec.detach().clone(),
        "b_dec": sae.b_dec.detach() / scale,
        "threshold": threshold / scale,
    }
