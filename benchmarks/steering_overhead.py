"""Steering overhead: how much slower greedy generation gets under `steer()` and under nnsight.

On the embedded Gemma 3 270M (fp32), generates 64 new tokens greedily at batch 1 and batch 8
with four variants, timed side by side with interleaved repetitions (each repetition runs every
variant once, in an order that rotates between repetitions):

- `plain`: `model.generate`;
- `one_layer`: inside `steer()` with one random direction at L9.resid_post (strength 0.1);
- `all_layers`: inside `steer()` with a random direction at every layer's resid_post;
- `nnsight_one_layer`: the same one-layer addition written as an nnsight intervention
  (a fixed absolute vector; it runs on a second copy of the model, because wrapping a model in
  nnsight permanently replaces every module's `forward` and would slow the other variants).

Ratios are medians of per-repetition ratios to `plain`. Checked once, outside the timing: the
nnsight variant's output ids equal `steer(..., scale="absolute")` with the same vector. Then on
`tiny_model("llama")`, where hook cost is not hidden behind the matmuls, it reports the added
microseconds per steered layer per forward step.

Run (the full run takes a while on CPU; `--quick` is a smoke run with 2 repetitions, 16 tokens):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steering_overhead.py --json runs/steering_overhead.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steering_overhead.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nnsight
import torch
import transformers
from interleaved import Variant, finish, median_ratio, time_interleaved
from nnsight import TransformersModel
from torch import Tensor

import steerscope
from steerscope.capture import capture, tokenize
from steerscope.model import Model
from steerscope.steering import Fingerprint, SteeringVector, steer
from steerscope.tiny import tiny_model

PROMPTS = (
    "The cat slept on the warm windowsill all afternoon.",
    "Rain is expected across the north tomorrow.",
    "She opened the letter and read it twice.",
    "Our train was delayed by an hour.",
    "The museum closes early on Sundays.",
    "He planted tomatoes along the garden fence.",
    "Prices rose sharply after the storm.",
    "A small boat drifted toward the harbour.",
)
BATCHES = (1, 8)
STEERED_LAYER = 9
STRENGTH = 0.1


def prompt_inputs(model: Model, batch: int) -> dict[str, Tensor]:
    """Left-padded input ids and attention mask for the first `batch` prompts."""
    inputs = tokenize(model, list(PROMPTS[:batch]))
    inputs.pop("position_ids")
    return inputs


def generation_kwargs(n_tokens: int) -> dict[str, Any]:
    return {"min_new_tokens": n_tokens, "max_new_tokens": n_tokens, "do_sample": False}


def random_vector(model: Model, layers: list[int], seed: int = 0) -> SteeringVector:
    """A steering vector with one random direction at each of `layers`' resid_post."""
    generator = torch.Generator().manual_seed(seed)
    d_model = model.anatomy.d_model
    directions = {f"L{layer}.resid_post": torch.randn(d_model, generator=generator) for layer in layers}
    return SteeringVector(directions, Fingerprint.of(model))


def steered_generate(
    model: Model, vector: SteeringVector, inputs: dict[str, Tensor], n_tokens: int
) -> Variant:
    def run() -> Tensor:
        with steer(model, vector, strength=STRENGTH):
            return model.generate(**inputs, **generation_kwargs(n_tokens))

    return run


def nnsight_generate(
    lm: TransformersModel, layer: int, delta: Tensor, inputs: dict[str, Tensor], n_tokens: int
) -> Tensor:
    """Greedy generation adding `delta` [d_model] to layer `layer`'s output at every step."""
    with lm.generate(**inputs, **generation_kwargs(n_tokens)) as tracer:
        for _ in tracer.iter[:n_tokens]:
            lm.model.layers[layer].output = lm.model.layers[layer].output + delta
        ids = tracer.result.save()
    return ids


def gemma_overhead(reps: int, n_tokens: int) -> dict[str, Any]:
    """Time the four variants on the embedded model; check nnsight against steerscope once."""
    model = steerscope.load()
    nnsight_copy = steerscope.load()
    lm = TransformersModel(nnsight_copy.hf, tokenizer=nnsight_copy.tokenizer, task="text-generation")
    one_layer = random_vector(model, [STEERED_LAYER])
    all_layers = random_vector(model, list(range(model.anatomy.n_layers)))
    # A fixed vector of about the size `one_layer` adds: STRENGTH x the typical L9 residual norm.
    site = f"L{STEERED_LAYER}.resid_post"
    typical_norm = (
        capture(model, list(PROMPTS), site, reduce="last", progress=False)[site].norm(dim=-1).mean()
    )
    direction = one_layer.directions[site]
    delta = direction / direction.norm() * STRENGTH * typical_norm

    inputs = prompt_inputs(model, max(BATCHES))
    absolute = SteeringVector({site: delta}, Fingerprint.of(model))
    with steer(model, absolute, strength=1.0, scale="absolute"):
        reference = model.generate(**inputs, **generation_kwargs(n_tokens))
    matches = torch.equal(nnsight_generate(lm, STEERED_LAYER, delta, inputs, n_tokens), reference)
    changed = not torch.equal(model.generate(**inputs, **generation_kwargs(n_tokens)), reference)

    seconds_by_batch = {}
    for batch in BATCHES:
        inputs = prompt_inputs(model, batch)
        variants: dict[str, Variant] = {
            "plain": lambda inputs=inputs: model.generate(**inputs, **generation_kwargs(n_tokens)),
            "one_layer": steered_generate(model, one_layer, inputs, n_tokens),
            "all_layers": steered_generate(model, all_layers, inputs, n_tokens),
            "nnsight_one_layer": lambda inputs=inputs: nnsight_generate(
                lm, STEERED_LAYER, delta, inputs, n_tokens
            ),
        }
        seconds_by_batch[f"batch_{batch}"], _ = time_interleaved(variants, reps)

    def per_batch(stat: Callable[[dict[str, list[float]]], float]) -> dict[str, float]:
        return {batch: round(stat(seconds), 4) for batch, seconds in seconds_by_batch.items()}

    return {
        "model": model.source,
        "n_layers": model.anatomy.n_layers,
        "median_seconds": {
            name: per_batch(lambda s, name=name: statistics.median(s[name]))
            for name in seconds_by_batch[f"batch_{BATCHES[0]}"]
        },
        "ratio_one_layer_vs_plain": per_batch(lambda s: median_ratio(s, "one_layer", "plain")),
        "ratio_all_layers_vs_plain": per_batch(lambda s: median_ratio(s, "all_layers", "plain")),
        "ratio_nnsight_vs_plain": per_batch(lambda s: median_ratio(s, "nnsight_one_layer", "plain")),
        "nnsight_matches_steerscope": matches,
        "nnsight_steering_changes_output": changed,
        "nnsight_delta_norm": round(float(delta.norm()), 2),
    }


def tiny_overhead(reps: int, n_tokens: int) -> dict[str, Any]:
    """Added microseconds per steered layer per forward step, all layers steered, on a tiny model."""
    model = tiny_model("llama")
    n_layers = model.anatomy.n_layers
    vector = random_vector(model, list(range(n_layers)))
    result: dict[str, Any] = {"n_layers": n_layers, "n_steps": n_tokens}
    for batch in BATCHES:
        inputs = prompt_inputs(model, batch)
        seconds, _ = time_interleaved(
            {
                "plain": lambda inputs=inputs: model.generate(**inputs, **generation_kwargs(n_tokens)),
                "all_layers": steered_generate(model, vector, inputs, n_tokens),
            },
            reps,
        )
        added = statistics.median(seconds["all_layers"]) - statistics.median(seconds["plain"])
        result[f"batch_{batch}"] = round(added / (n_layers * n_tokens) * 1e6, 2)
        result[f"median_seconds_batch_{batch}"] = {
            name: round(statistics.median(times), 4) for name, times in seconds.items()
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 repetitions, 16 tokens")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    reps, n_tokens = (2, 16) if args.quick else (args.reps, 64)

    load_at_start = os.getloadavg()[0]
    with torch.inference_mode():
        results = {
            "n_new_tokens": n_tokens,
            "batches": list(BATCHES),
            "repetitions": reps,
            "torch_threads": torch.get_num_threads(),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "nnsight": nnsight.__version__,
            },
            "notes": (
                "Times are seconds per greedy generate call, warm-up excluded; ratios are medians "
                "of per-repetition ratios to plain. one_layer/all_layers use steer() with relative "
                f"strength {STRENGTH}; nnsight_one_layer adds a fixed absolute vector of about the "
                "same size (a timing comparison) on a separate nnsight-wrapped copy of the model. "
                "tiny_model_us_per_layer_step = (median all-layers-steered - median plain) / "
                "(n_layers x n_steps), one step being one forward pass (prefill included)."
            ),
            **gemma_overhead(reps, n_tokens),
            "tiny_model_us_per_layer_step": tiny_overhead(reps, n_tokens),
        }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
