"""Where `steer()`'s cost over a bare hook goes, on `tiny_model("llama")` (4 layers), by adding one
piece of it at a time, side by side in one run:

- `plain`: `model.generate`;
- `bare_hook`: one plain forward hook per layer adding a fixed vector (the floor);
- `intervene_marked_edit`: `intervene` with an edit adding the fixed vector, marked
  `ignores_tokens` and `result_checked` (the hook wrapper alone);
- `intervene_edit`: the same edit unmarked: per-call token tracking and a check of each result;
- `steer_absolute`: `steer(..., scale="absolute")` at every token (marked: no tracking, no check);
- `steer_absolute_generated`: the same at generated tokens only: token tracking, a token mask per
  call and a multiply-add per layer (other tokens than the rest, so not in the token check).

Greedy 64 tokens at batch 1, every layer steered, 1 torch thread, CPU time of this process;
microseconds per layer-step over `bare_hook`, as the median and as the difference of the minima
over interleaved repetitions (the minimum is steadier for deterministic CPU work). All variants
that add the vector at every token give the same tokens (checked).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steering_overhead_parts.py --reps 61 --json F
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import torch
from interleaved import finish, time_interleaved
from steering_overhead import (
    TINY_DELTA_NORM,
    bare_hooks,
    generation_kwargs,
    prompt_inputs,
    random_vector,
)
from torch import Tensor

from steerscope.intervene import ignores_tokens, intervene, result_checked
from steerscope.sites import Site
from steerscope.steering import Fingerprint, SteeringVector, steer
from steerscope.tiny import tiny_model

N_TOKENS = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=61, help="interleaved repetitions (default 61)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    load_at_start = os.getloadavg()[0]
    torch.set_num_threads(1)
    model = tiny_model("llama")
    n_layers = model.anatomy.n_layers
    directions = random_vector(model, list(range(n_layers))).directions
    absolute = SteeringVector(
        {site: d / d.norm() * TINY_DELTA_NORM for site, d in directions.items()}, Fingerprint.of(model)
    )
    deltas = {Site.parse(site).layer: d for site, d in absolute.directions.items()}
    edits = {f"L{layer}.resid_post": (lambda act, tokens, d=d: act + d) for layer, d in deltas.items()}
    marked = {
        site: ignores_tokens(result_checked(lambda act, tokens, e=e: e(act, tokens)))
        for site, e in edits.items()
    }
    blocks: dict[str, Callable[[], AbstractContextManager]] = {
        "plain": ExitStack,
        "bare_hook": bare_hooks(model, deltas),
        "intervene_marked_edit": lambda: intervene(model, marked),
        "intervene_edit": lambda: intervene(model, edits),
        "steer_absolute": lambda: steer(model, absolute, strength=1.0, scale="absolute"),
        "steer_absolute_generated": lambda: steer(
            model, absolute, strength=1.0, scale="absolute", positions="generated"
        ),
    }
    inputs = prompt_inputs(model, 1)

    def variant(block: Callable[[], AbstractContextManager]) -> Callable[[], Tensor]:
        def run() -> Tensor:
            with block():
                return model.generate(**inputs, **generation_kwargs(N_TOKENS))

        return run

    with torch.inference_mode():
        gc.collect()
        gc.disable()
        try:
            seconds, first = time_interleaved(
                {name: variant(block) for name, block in blocks.items()}, args.reps, clock=time.process_time
            )
        finally:
            gc.enable()
    steps = n_layers * N_TOKENS

    def over_bare(name: str) -> dict[str, float]:
        paired = [(t - b) / steps * 1e6 for t, b in zip(seconds[name], seconds["bare_hook"], strict=True)]
        minima = (min(seconds[name]) - min(seconds["bare_hook"])) / steps * 1e6
        return {"median": round(statistics.median(paired), 2), "difference_of_minima": round(minima, 2)}

    adding = ["intervene_marked_edit", "intervene_edit", "steer_absolute"]
    finish(
        {
            "n_layers": n_layers,
            "n_steps": N_TOKENS,
            "repetitions": args.reps,
            "us_per_layer_step_over_bare_hook": {
                name: over_bare(name) for name in blocks if name != "bare_hook"
            },
            "same_tokens": all(torch.equal(first[name], first["bare_hook"]) for name in adding),
            "steering_changes_tokens": not torch.equal(first["bare_hook"], first["plain"]),
        },
        args.json,
        load_at_start,
    )


if __name__ == "__main__":
    main()
