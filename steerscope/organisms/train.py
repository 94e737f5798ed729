"""Train a model organism: corpus, tokenizer, model, optimisation, checkpoints. An organism with
planted directions is fine-tuned from another organism's trained weights (`new_model`), with the
loss of `steerscope.organisms.planted`; every other one is trained from scratch.

Deterministic by the spec's seed: the corpus and tokenizer are pure functions of the spec, the
weights start from `torch.manual_seed(seed)`, step `t`'s batch is drawn with a generator seeded
by (seed, t), and training always uses `TRAIN_THREADS` torch threads (the thread count sets the
order of float sums, so a different count gives different weights). A run resumed from a
checkpoint takes exactly the steps it would have taken.
Every `checkpoint_every` steps a checkpoint is written atomically to the work folder: the weights
and the AdamW state as safetensors, and a JSON of the step, losses and time, the recipe digest and
the XXH3-128 of the safetensors file, which binds the two; the last `KEEP_CHECKPOINTS` are kept.
A killed build resumes from the newest one that verifies; a damaged or foreign one is discarded
with a warning. Training draws no random numbers besides the seeded batches (no dropout), so no
RNG state is saved. Nothing is unpickled: a pickled `checkpoint.pt` of older versions is deleted.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from steerscope.cache import write_atomic
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest
from steerscope.organisms import ORGANISM_ATTRIBUTE, PLANTED_ATTRIBUTE, REPORT, OrganismSpec, organism_spec
from steerscope.organisms.filler import filler_texts
from steerscope.organisms.planted import PlantedRows, planted_loss, planted_rows
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.tiny import tiny_config

CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2
LEGACY_CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_FORMAT = 1
_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")
TRAIN_THREADS = 2


@dataclass
class Corpus:
    """The tokenized training documents (each `<bos> text <eos>`), the tokenizer, and for a spec
    with planted directions each document's targets."""

    tokenizer: PreTrainedTokenizerFast
    documents: list[list[int]]
    planted: PlantedRows | None = None


def corpus_texts(spec: OrganismSpec) -> list[str]:
    """The capability texts followed by the filler paragraphs, as generated for this spec."""
    world, training = spec.world_module(), spec.training
    return [
        *world.training_texts(training.n_task, training.seed),
        *filler_texts(world.LEXICON, training.n_filler, f"train/{training.seed}"),
    ]


def build_corpus(spec: OrganismSpec) -> Corpus:
    """Generate the texts, fit the word tokenizer on them and tokenize every document."""
    texts = corpus_texts(spec)
    tokenizer = word_tokenizer(texts)
    ids = tokenizer(texts).input_ids
    longest = max(len(row) for row in ids) + 1
    if longest > spec.shape.max_positions:
        raise ValueError(
            f"{spec.name}: a training document has {longest} tokens, more than "
            f"shape.max_positions={spec.shape.max_positions}"
        )
    documents = [row + [tokenizer.eos_token_id] for row in ids]
    if spec.planted is None:
        return Corpus(tokenizer, documents)
    task = spec.world_module().planted_labels(spec.training.n_task, spec.training.seed)
    labels = [*task, *[None] * (len(documents) - len(task))]  # the filler follows the task texts
    return Corpus(tokenizer, documents, planted_rows(tokenizer, documents, labels))


def new_model(spec: OrganismSpec, tokenizer: PreTrainedTokenizerFast, start: Path | None = None) -> nn.Module:
    """A freshly initialised model of the spec's family and shape (seeded), tied embeddings; for a
    spec with planted directions, the trained organism it starts from (its folder: `start`)."""
    if spec.planted is not None:
        return _start_model(spec, tokenizer, start)
    shape = spec.shape
    config = tiny_config(
        shape.family,
        len(tokenizer),
        hidden_size=shape.d_model,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        max_position_embeddings=shape.max_positions,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    setattr(config, ORGANISM_ATTRIBUTE, spec.world_module().__name__.rsplit(".", 1)[-1])
    torch.manual_seed(spec.training.seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _start_model(spec: OrganismSpec, tokenizer: PreTrainedTokenizerFast, folder: Path | None) -> nn.Module:
    """The trained weights of `spec.planted.start_from` (committed and verified, or its cache build),
    marked as `spec`'s planted organism; its shape and vocabulary must be this spec's."""
    assert spec.planted is not None
    start = organism_spec(spec.planted.start_from)
    if folder is None:
        raise InputError(
            f"organism:{spec.name} starts from organism:{start.name}: pass that organism's folder"
        )
    if start.shape != spec.shape or start.world != spec.world:
        raise ValueError(f"{spec.name}: starts from organism:{start.name} of another shape or world")
    if PreTrainedTokenizerFast.from_pretrained(folder).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"{spec.name}: its corpus' vocabulary is not that of organism:{start.name}")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    setattr(model.config, PLANTED_ATTRIBUTE, spec.name)
    return model


def batch_picks(corpus: Corpus, spec: OrganismSpec, step: int) -> Tensor:
    """The indices [batch_size] of the documents of step `step`: a draw seeded by (seed, step)."""
    generator = torch.Generator().manual_seed(spec.training.seed * 1_000_003 + step)
    return torch.randint(len(corpus.documents), (spec.training.batch_size,), generator=generator)


def batch_at(corpus: Corpus, spec: OrganismSpec, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels) of step `step`: a seeded draw, right-padded."""
    rows = [corpus.documents[i] for i in batch_picks(corpus, spec, step).tolist()]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), corpus.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def learning_rate(spec: OrganismSpec, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    training = spec.training
    if step < training.warmup:
        return training.lr * (step + 1) / training.warmup
    progress = (step - training.warmup) / max(1, training.steps - training.warmup)
    return training.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _optimizer(model: nn.Module, spec: OrganismSpec) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": spec.training.weight_decay},
            {"params": rest, "weight_decay": 0.0},
        ],
        lr=spec.training.lr,
        betas=(0.9, 0.98),
    )


def _checkpoint_files(work: Path, step: int) -> tuple[Path, Path]:
    """(tensors, metadata) paths of the checkpoint at `step`; zero-padded so names sort by step."""
    stem = f"{CHECKPOINT_PREFIX}{step:07d}"
    return work / f"{stem}.safetensors", work / f"{stem}.json"


def _checkpoints(work: Path) -> list[Path]:
    """The metadata files of the checkpoints in `work`, newest first."""
    return sorted(work.glob(f"{CHECKPOINT_PREFIX}*.json"), reverse=True)


def _discard(meta_path: Path) -> None:
    meta_path.unlink(missing_ok=True)
    meta_path.with_suffix(".safetensors").unlink(missing_ok=True)


def model_tensors(model: nn.Module) -> dict[str, Tensor]:
    """The model's state by name, each storage once (tied embeddings are one tensor, saved once)."""
    seen: set[int] = set()
    tensors = {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            tensors[name] = tensor
    return tensors


def _adam_shapes(optimizer: torch.optim.Optimizer) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Shape and dtype of every AdamW state tensor once a step was taken, keyed as saved."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {
        f"optimizer.{i}.{key}": ((), torch.float32) if key == "step" else (tuple(p.shape), p.dtype)
        for i, p in enumerate(params)
        for key in _ADAM_STATE
    }


def _save_checkpoint(work: Path, spec: OrganismSpec, model: nn.Module, optimizer: Any, state: dict) -> None:
    tensors = {f"model.{name}": t.detach().contiguous() for name, t in model_tensors(model).items()}
    for index, entry in optimizer.state_dict()["state"].items():
        tensors.update({f"optimizer.{index}.{key}": entry[key].contiguous() for key in _ADAM_STATE})
    data = save_tensors(tensors)
    tensors_path, meta_path = _checkpoint_files(work, state["step"])
    meta = {
        "format": _CHECKPOINT_FORMAT,
        "recipe": spec.digest(),
        "step": state["step"],
        "losses": state["losses"],
        "seconds": state["seconds"],
        "tensors": {"file": tensors_path.name, HASH_NAME: data_digest(data)},
    }
    write_atomic(tensors_path, data)
    write_atomic(meta_path, json.dumps(meta))  # last: a checkpoint exists once its JSON does
    for old in _checkpoints(work)[KEEP_CHECKPOINTS:]:
        _discard(old)


class _BadCheckpoint(Exception):
    """A checkpoint that is damaged, foreign or of another format (the message says which)."""


def _read_checkpoint(
    meta_path: Path, spec: OrganismSpec, model: nn.Module, optimizer: Any
) -> tuple[dict[str, Tensor], dict, dict]:
    """Verify one checkpoint against this spec, model and optimizer without changing them.

    Returns (model tensors, optimizer state dict, training state); raises `_BadCheckpoint`.
    """
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict) or meta.get("format") != _CHECKPOINT_FORMAT:
            raise _BadCheckpoint("unknown format")
        if meta.get("recipe") != spec.digest():
            raise _BadCheckpoint("written for another recipe")
        step, losses, seconds = meta["step"], meta["losses"], meta["seconds"]
        tensors_path = meta_path.with_suffix(".safetensors")
        if meta["tensors"]["file"] != tensors_path.name:
            raise _BadCheckpoint(f"names {meta['tensors']['file']!r} as its tensors")
        data = tensors_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise _BadCheckpoint(f"unreadable ({error.__class__.__name__}: {error})") from None
    if not (isinstance(step, int) and 0 < step <= spec.training.steps):
        raise _BadCheckpoint(f"step {step!r} outside 1..{spec.training.steps}")
    if not (isinstance(losses, list) and all(isinstance(x, numbers.Real) for x in losses)):
        raise _BadCheckpoint("losses are not a list of numbers")
    if not isinstance(seconds, numbers.Real):
        raise _BadCheckpoint("seconds is not a number")
    if data_digest(data) != meta["tensors"].get(HASH_NAME):
        raise _BadCheckpoint(f"{tensors_path.name} does not match the {HASH_NAME} in its JSON")
    try:
        tensors = load_tensors(data)
    except SafetensorError as error:
        raise _BadCheckpoint(f"{tensors_path.name} is not valid safetensors ({error})") from None
    expected = {f"model.{n}": (tuple(t.shape), t.dtype) for n, t in model_tensors(model).items()}
    expected.update(_adam_shapes(optimizer))
    found = {name: (tuple(t.shape), t.dtype) for name, t in tensors.items()}
    if found != expected:
        wrong = sorted(n for n in set(found) | set(expected) if found.get(n) != expected.get(n))
        raise _BadCheckpoint(f"tensors do not fit this model and optimizer ({', '.join(wrong[:3])}, ...)")
    weights = {name.removeprefix("model."): t for name, t in tensors.items() if name.startswith("model.")}
    adam: dict[int, dict[str, Tensor]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".")
            adam.setdefault(int(index), {})[key] = tensor
    optimizer_state = {"state": adam, "param_groups": optimizer.state_dict()["param_groups"]}
    return weights, optimizer_state, {"step": step, "losses": list(losses), "seconds": float(seconds)}


def _resume(work: Path, spec: OrganismSpec, model: nn.Module, optimizer: Any) -> dict:
    """Load the newest checkpoint in `work` that verifies for this spec; the training state to go on
    from. Checkpoints that fail are deleted with a warning; with none left, training starts at 0."""
    legacy = work / LEGACY_CHECKPOINT
    if legacy.exists():
        warnings.warn(f"deleting {legacy}: pickled checkpoints are never loaded", stacklevel=3)
        legacy.unlink()
    for meta_path in _checkpoints(work):
        try:
            weights, optimizer_state, state = _read_checkpoint(meta_path, spec, model, optimizer)
        except _BadCheckpoint as problem:
            warnings.warn(
                f"discarding checkpoint {meta_path}: {problem}; going on from an earlier one or from step 0",
                stacklevel=3,
            )
            _discard(meta_path)
            continue
        model.load_state_dict(weights, strict=False)  # tied weights are saved once
        optimizer.load_state_dict(optimizer_state)
        return state
    return {"step": 0, "losses": [], "seconds": 0.0}


@contextmanager
def _threads(n: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_steps(
    spec: OrganismSpec,
    corpus: Corpus,
    work: Path,
    until: int | None = None,
    progress: bool = True,
    start: Path | None = None,
) -> tuple[nn.Module, dict]:
    """Train up to step `until` (default: all steps), resuming from and writing checkpoints in `work`,
    with `TRAIN_THREADS` torch threads; `start`: the folder of the organism a planted spec starts from.

    Returns the model and the training state: `step`, `losses` (mean loss per 50 steps), `seconds`.
    """
    with _threads(TRAIN_THREADS):
        return _train_steps(spec, corpus, work, until, progress, start)


def _train_steps(
    spec: OrganismSpec, corpus: Corpus, work: Path, until: int | None, progress: bool, start: Path | None
) -> tuple[nn.Module, dict]:
    until = spec.training.steps if until is None else min(until, spec.training.steps)
    model = new_model(spec, corpus.tokenizer, start)
    optimizer = _optimizer(model, spec)
    state = _resume(work, spec, model, optimizer)
    model.train()
    window: list[float] = []
    parts_window: list[dict[str, float]] = []  # the planted loss terms, shown beside the loss
    started = time.time() - state["seconds"]
    bar = tqdm(
        total=until, initial=state["step"], desc=f"training organism:{spec.name}", disable=not progress
    )
    for step in range(state["step"], until):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(spec, step)
        ids, mask, labels = batch_at(corpus, spec, step)
        if corpus.planted is None:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        else:
            picks = batch_picks(corpus, spec, step)
            loss, parts = planted_loss(model, spec, corpus.planted, picks, ids, mask, labels, step)
            parts_window.append(parts)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(loss.item())
        bar.update()
        if len(window) == 50:
            state["losses"].append(sum(window) / len(window))
            terms: dict[str, list[float]] = {}
            for parts in parts_window:
                for name, value in parts.items():
                    terms.setdefault(name, []).append(value)
            means = {name: sum(values) / len(values) for name, values in terms.items()}
            bar.set_postfix(loss=f"{state['losses'][-1]:.3f}", **{n: f"{v:.3f}" for n, v in means.items()})
            window, parts_window = [], []
        state["step"] = step + 1
        if state["step"] % spec.training.checkpoint_every == 0 or state["step"] == until:
            state["seconds"] = time.time() - started
            _save_checkpoint(work, spec, model, optimizer, state)
    bar.close()
    model.eval()
    return model, state


def train_organism(
    spec: OrganismSpec, out: Path, work: Path, progress: bool = True, start: Path | None = None
) -> dict:
    """Train `spec` to the end (resuming from `work`) and save model, tokenizer and report in `out`;
    `start`: the folder of the organism a planted spec starts from."""
    corpus = build_corpus(spec)
    model, state = train_steps(spec, corpus, work, progress=progress, start=start)
    model.config.name_or_path = f"organism:{spec.name}"
    model.save_pretrained(out)
    corpus.tokenizer.save_pretrained(out)
    report = {
        "organism": spec.name,
        "digest": spec.digest(),
        "steps": state["step"],
        "train_seconds": round(state["seconds"], 1),
        "final_loss": state["losses"][-1] if state["losses"] else None,
        "losses_per_50_steps": state["losses"],
        "n_documents": len(corpus.documents),
        "vocab_size": len(corpus.tokenizer),
        "n_parameters": sum(p.numel() for p in model.parameters()),
    }
    write_atomic(out / REPORT, json.dumps(report, indent=1))
    return report
