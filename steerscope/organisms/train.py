"""Train a model organism from scratch: corpus, tokenizer, model, optimisation, checkpoints.

Deterministic by the spec's seed: the corpus and tokenizer are pure functions of the spec, the
weights start from `torch.manual_seed(seed)`, step `t`'s batch is drawn with a generator seeded
by (seed, t), and training always uses `TRAIN_THREADS` torch threads (the thread count sets the
order of float sums, so a different count gives different weights). A run resumed from a
checkpoint takes exactly the steps it would have taken.
A checkpoint (weights, optimizer, losses) is written atomically to the work folder every
`checkpoint_every` steps; a killed build resumes from the last one.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from steerscope.cache import write_atomic
from steerscope.organisms import ORGANISM_ATTRIBUTE, OrganismSpec
from steerscope.organisms.filler import filler_texts
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.tiny import tiny_config

CHECKPOINT = "checkpoint.pt"
TRAIN_THREADS = 2
REPORT = "training_report.json"


@dataclass
class Corpus:
    """The tokenized training documents (each `<bos> text <eos>`) and the tokenizer."""

    tokenizer: PreTrainedTokenizerFast
    documents: list[list[int]]


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
    return Corpus(tokenizer, [row + [tokenizer.eos_token_id] for row in ids])


def new_model(spec: OrganismSpec, tokenizer: PreTrainedTokenizerFast) -> nn.Module:
    """A freshly initialised model of the spec's family and shape (seeded), tied embeddings."""
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


def batch_at(corpus: Corpus, spec: OrganismSpec, step: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input_ids, attention_mask, labels) of step `step`: a seeded draw, right-padded."""
    generator = torch.Generator().manual_seed(spec.training.seed * 1_000_003 + step)
    picks = torch.randint(len(corpus.documents), (spec.training.batch_size,), generator=generator)
    rows = [corpus.documents[i] for i in picks.tolist()]
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


def _save_checkpoint(work: Path, spec: OrganismSpec, model: nn.Module, optimizer: Any, state: dict) -> None:
    buffer = io.BytesIO()
    torch.save(
        {"digest": spec.digest(), "model": model.state_dict(), "optimizer": optimizer.state_dict(), **state},
        buffer,
    )
    write_atomic(work / CHECKPOINT, buffer.getvalue())


def _resume(work: Path, spec: OrganismSpec, model: nn.Module, optimizer: Any) -> dict:
    """Load the work folder's checkpoint if it belongs to this spec; the training state to go on from."""
    path = work / CHECKPOINT
    if path.is_file():
        saved = torch.load(path, weights_only=False)
        if saved["digest"] == spec.digest():
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            return {"step": saved["step"], "losses": saved["losses"], "seconds": saved["seconds"]}
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
    spec: OrganismSpec, corpus: Corpus, work: Path, until: int | None = None, progress: bool = True
) -> tuple[nn.Module, dict]:
    """Train up to step `until` (default: all steps), resuming from and writing checkpoints in `work`,
    with `TRAIN_THREADS` torch threads.

    Returns the model and the training state: `step`, `losses` (mean loss per 50 steps), `seconds`.
    """
    with _threads(TRAIN_THREADS):
        return _train_steps(spec, corpus, work, until, progress)


def _train_steps(
    spec: OrganismSpec, corpus: Corpus, work: Path, until: int | None, progress: bool
) -> tuple[nn.Module, dict]:
    until = spec.training.steps if until is None else min(until, spec.training.steps)
    model = new_model(spec, corpus.tokenizer)
    optimizer = _optimizer(model, spec)
    state = _resume(work, spec, model, optimizer)
    model.train()
    window: list[float] = []
    started = time.time() - state["seconds"]
    bar = tqdm(
        total=until, initial=state["step"], desc=f"training organism:{spec.name}", disable=not progress
    )
    for step in range(state["step"], until):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(spec, step)
        ids, mask, labels = batch_at(corpus, spec, step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        window.append(loss.item())
        bar.update()
        if len(window) == 50:
            state["losses"].append(sum(window) / len(window))
            bar.set_postfix(loss=f"{state['losses'][-1]:.3f}")
            window = []
        state["step"] = step + 1
        if state["step"] % spec.training.checkpoint_every == 0 or state["step"] == until:
            state["seconds"] = time.time() - started
            _save_checkpoint(work, spec, model, optimizer, state)
    bar.close()
    model.eval()
    return model, state


def train_organism(spec: OrganismSpec, out: Path, work: Path, progress: bool = True) -> dict:
    """Train `spec` to the end (resuming from `work`) and save model, tokenizer and report in `out`."""
    corpus = build_corpus(spec)
    model, state = train_steps(spec, corpus, work, progress=progress)
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
