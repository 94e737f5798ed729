"""Steering overhead: what `steer()` adds to greedy generation, against a bare hook and nnsight.

On `tiny_model("llama")` (4 layers), where hook cost is not hidden behind the matmuls: greedy 64
new tokens at batch 1 and batch 8 with every layer's resid_post steered, five variants timed side
by side with interleaved repetitions (each repetition runs every variant once, in an order that
rotates between repetitions), in CPU time of this process with one torch thread, so other
processes on a shared machine add as little noise as possible:

- `plain`: `model.generate`;
- `bare_hook`: one plain `register_forward_hook` per layer adding a fixed vector, the floor;
- `steer_absolute`: `steer(..., scale="absolute")` adding the same vectors;
- `steer_relative`: `steer(...)` adding strength x ||h|| along each direction;
- `nnsight`: the same additions as an nnsight intervention (on a second copy of the model,
  because wrapping a model in nnsight permanently replaces every module's `forward`).

Reported per variant: microseconds added per steered layer per forward step over `plain`, and
for steer() the same over `bare_hook` (medians of within-repetition differences; garbage is
collected before every run and collection is off during it). Also the time spent inside the hook
functions themselves during real generations (`hook_us_per_layer_step`), which resolves tenths
of a microsecond where whole generations vary by a few. Checked on the timed runs' outputs:
bare_hook, steer_absolute and nnsight give identical tokens, steer_relative the tokens of a bare
hook computing the relative addition, and steering changes the tokens.

Then on the embedded Gemma 3 270M (fp32, skipped with `--tiny-only`): plain generate against
`steer()` at one layer (L9) and at all layers and a one-layer nnsight intervention, as ratios to
plain (medians of per-repetition ratios), with the nnsight tokens checked against
`steer(..., scale="absolute")`.

Run (`--quick` makes the Gemma part a smoke run of 2 repetitions, 16 tokens; the tiny part is
always 64 tokens, `--tiny-reps` repetitions):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steering_overhead.py --json runs/steering_overhead.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/steering_overhead.py --quick --json F
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nnsight
import torch
import transformers
from interleaved import Variant, finish, median_ratio, time_interleaved
from nnsight import TransformersModel
from torch import Tensor
from torch.utils.hooks import RemovableHandle

import steerscope
from steerscope.capture import capture, tokenize_for_generate
from steerscope.intervene import module_at
from steerscope.model import Model
from steerscope.sites import Site
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
    inputs = tokenize_for_generate(model, list(PROMPTS[:batch]))
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


TINY_TOKENS = 64
TINY_STRENGTH_RELATIVE = 0.5
TINY_DELTA_NORM = 0.1  # tiny_model("llama")'s residual norms are 0.18-0.29


def bare_hooks(model: Model, deltas: dict[int, Tensor], relative: bool = False) -> Callable[[], Any]:
    """Context factory: one plain forward hook per layer adding `deltas[layer]` to its output
    (times the output's norm per token when `relative`); the floor any steering tool pays."""

    def register() -> list[RemovableHandle]:
        handles = []
        for layer, delta in deltas.items():
            module = module_at(model.hf, model.anatomy.layer_path(layer))
            if relative:
                hook = lambda m, a, out, d=delta: out + d * out.norm(dim=-1, keepdim=True)  # noqa: E731
            else:
                hook = lambda m, a, out, d=delta: out + d  # noqa: E731
            handles.append(module.register_forward_hook(hook))
        return handles

    return lambda: registered(register)


@contextmanager
def registered(register: Callable[[], list[RemovableHandle]]) -> Iterator[None]:
    """The hooks `register()` installs, for the block; removed after it, on errors too."""
    handles = register()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def nnsight_all_layers(
    lm: TransformersModel, deltas: dict[int, Tensor], inputs: dict[str, Tensor], n_tokens: int
) -> Tensor:
    """Greedy generation adding `deltas[layer]` to every layer's output at every step, in nnsight."""
    with lm.generate(**inputs, **generation_kwargs(n_tokens)) as tracer:
        for _ in tracer.iter[:n_tokens]:
            for layer, delta in deltas.items():
                lm.model.layers[layer].output = lm.model.layers[layer].output + delta
        ids = tracer.result.save()
    return ids


def hook_us_per_layer_step(
    model: Model, block: Callable[[], Any], inputs: dict[str, Tensor], n_tokens: int, reps: int = 5
) -> float:
    """Microseconds spent inside the hook functions a block installs (the decoder's pre-hooks and
    every layer's forward hooks) per layer per step of real greedy generations, timed by wrappers
    swapped into the modules' hook tables: the median of `reps` generations after one untimed.

    Inside a decode step the model's own work has pushed the hooks' code out of the CPU caches, so
    each Python step costs several times what it costs in a loop; the wrappers see that cost and
    resolve it to about 0.1 us, where whole-generation timings cannot. What the module call adds
    around its hooks (PyTorch's hook dispatch) is left out; the wrappers add the same to every
    variant."""
    decoder = module_at(model.hf, model.anatomy.family.decoder)
    n_layers = model.anatomy.n_layers
    modules = [decoder, *(module_at(model.hf, model.anatomy.layer_path(i)) for i in range(n_layers))]
    spent = [0]
    clock = time.perf_counter_ns

    def timed(hook: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            start = clock()
            result = hook(*args)
            spent[0] += clock() - start
            return result

        return wrapper

    samples = []
    with block():
        swapped = [
            (table, key, hook)
            for module in modules
            for table in (module._forward_pre_hooks, module._forward_hooks)
            for key, hook in table.items()
        ]
        for table, key, hook in swapped:
            table[key] = timed(hook)
        try:
            for _ in range(reps + 1):
                spent[0] = 0
                model.generate(**inputs, **generation_kwargs(n_tokens))
                samples.append(spent[0])
        finally:
            for table, key, hook in swapped:
                table[key] = hook
    return round(statistics.median(samples[1:]) / 1e3 / (n_layers * n_tokens), 2)


def paired_us(seconds: dict[str, list[float]], name: str, reference: str, steps: int) -> float:
    """Median over repetitions of (time(name) - time(reference)) in the same repetition, in
    microseconds per layer-step."""
    paired = [(t - r) / steps * 1e6 for t, r in zip(seconds[name], seconds[reference], strict=True)]
    return round(statistics.median(paired), 2)


def tiny_overhead(reps: int, n_tokens: int) -> dict[str, Any]:
    """Microseconds added per steered layer per forward step, every layer steered, on a tiny model:
    a bare hook, `steer()` absolute and relative, and nnsight, side by side."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _tiny_overhead(reps, n_tokens)
    finally:
        torch.set_num_threads(threads)


def _tiny_overhead(reps: int, n_tokens: int) -> dict[str, Any]:
    model = tiny_model("llama")
    lm = TransformersModel(tiny_model("llama").hf, tokenizer=model.tokenizer, task="text-generation")
    n_layers = model.anatomy.n_layers
    vector = random_vector(model, list(range(n_layers)))
    units = {Site.parse(s).layer: d / d.norm() for s, d in vector.directions.items()}
    absolute = SteeringVector(
        {f"L{layer}.resid_post": unit * TINY_DELTA_NORM for layer, unit in units.items()},
        Fingerprint.of(model),
    )
    deltas = {Site.parse(s).layer: d * 1.0 for s, d in absolute.directions.items()}
    relative_deltas = {layer: TINY_STRENGTH_RELATIVE * unit for layer, unit in units.items()}
    blocks: dict[str, Callable[[], Any]] = {
        "bare_hook": bare_hooks(model, deltas),
        "steer_absolute": lambda: steer(model, absolute, strength=1.0, scale="absolute"),
        "steer_relative": lambda: steer(model, vector, strength=TINY_STRENGTH_RELATIVE),
    }
    bare_relative = bare_hooks(model, relative_deltas, relative=True)

    def within(block: Callable[[], Any], inputs: dict[str, Tensor]) -> Variant:
        def run() -> Tensor:
            with block():
                return model.generate(**inputs, **generation_kwargs(n_tokens))

        return run

    result: dict[str, Any] = {
        "n_layers": n_layers,
        "n_steps": n_tokens,
        "repetitions": reps,
        "torch_threads": torch.get_num_threads(),
        "clock": "time.process_time (CPU time of this process: other processes' load is left out)",
    }
    per_layer_step: dict[str, dict[str, float]] = {}
    minus_bare: dict[str, dict[str, float]] = {}
    hook_cost: dict[str, dict[str, float]] = {}
    hook_cost_minus_bare: dict[str, dict[str, float]] = {}
    checks: dict[str, dict[str, bool]] = {}
    for batch in BATCHES:
        inputs = prompt_inputs(model, batch)
        key = f"batch_{batch}"
        variants: dict[str, Variant] = {
            "plain": lambda inputs=inputs: model.generate(**inputs, **generation_kwargs(n_tokens)),
            **{name: within(block, inputs) for name, block in blocks.items()},
            "nnsight": lambda inputs=inputs: nnsight_all_layers(lm, deltas, inputs, n_tokens),
        }
        gc.collect()
        gc.disable()  # as timeit does: a collection in one variant's run is noise
        try:
            seconds, first = time_interleaved(variants, reps, clock=time.process_time, before_each=gc.collect)
        finally:
            gc.enable()
        steps = n_layers * n_tokens
        for name in variants:
            if name != "plain":
                per_layer_step.setdefault(name, {})[key] = paired_us(seconds, name, "plain", steps)
        for name in ("steer_absolute", "steer_relative"):
            minus_bare.setdefault(name, {})[key] = paired_us(seconds, name, "bare_hook", steps)
        hooks_only = {
            name: hook_us_per_layer_step(model, block, inputs, n_tokens) for name, block in blocks.items()
        }
        for name, us in hooks_only.items():
            hook_cost.setdefault(name, {})[key] = us
        for name in ("steer_absolute", "steer_relative"):
            hook_cost_minus_bare.setdefault(name, {})[key] = round(
                hooks_only[name] - hooks_only["bare_hook"], 2
            )
        relative_reference = within(bare_relative, inputs)()
        checks[key] = {
            "bare_hook_steer_absolute_nnsight_identical": torch.equal(
                first["bare_hook"], first["steer_absolute"]
            )
            and torch.equal(first["bare_hook"], first["nnsight"]),
            "steer_relative_equals_bare_relative_hook": torch.equal(
                first["steer_relative"], relative_reference
            ),
            "absolute_changes_tokens": not torch.equal(first["bare_hook"], first["plain"]),
            "relative_changes_tokens": not torch.equal(first["steer_relative"], first["plain"]),
        }
        result[f"median_seconds_{key}"] = {
            name: round(statistics.median(times), 4) for name, times in seconds.items()
        }
    result["us_per_layer_step"] = per_layer_step
    result["steer_absolute_minus_bare_us"] = minus_bare["steer_absolute"]
    result["steer_relative_minus_bare_us"] = minus_bare["steer_relative"]
    result["hook_functions_us_per_layer_step"] = hook_cost
    result["hook_functions_minus_bare_us"] = hook_cost_minus_bare
    result["identical_tokens"] = checks
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions on Gemma (default 5)")
    parser.add_argument(
        "--tiny-reps", type=int, default=41, help="interleaved repetitions on the tiny model (default 41)"
    )
    parser.add_argument("--quick", action="store_true", help="Gemma smoke run: 2 repetitions, 16 tokens")
    parser.add_argument("--tiny-only", action="store_true", help="skip the embedded model")
    args = parser.parse_args()
    if args.reps < 1 or args.tiny_reps < 1:
        parser.error(f"--reps and --tiny-reps must be at least 1, got {args.reps} and {args.tiny_reps}")
    reps, n_tokens = (2, 16) if args.quick else (args.reps, 64)

    load_at_start = os.getloadavg()[0]
    with torch.inference_mode():
        tiny = tiny_overhead(args.tiny_reps, TINY_TOKENS)
        results = {
            "batches": list(BATCHES),
            "torch_threads": torch.get_num_threads(),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "nnsight": nnsight.__version__,
            },
            "notes": (
                "tiny_model_us_per_layer_step: CPU microseconds (process time, 1 torch thread) added "
                "per steered layer per forward step (prefill included) over plain generate, every "
                "layer's resid_post steered; the median over repetitions of the difference within "
                "each repetition. *_minus_bare_us: the same against bare_hook. "
                "tiny_model.hook_functions_*: microseconds inside the hook functions per layer-step "
                "during real generations (timed wrappers, median of 5). gemma: seconds per "
                "greedy generate call (wall time), warm-up excluded, ratios the medians of "
                "per-repetition ratios to plain; one_layer/all_layers use steer() with relative "
                f"strength {STRENGTH}; nnsight_one_layer adds a fixed absolute vector of about the "
                "same size on a separate nnsight-wrapped copy of the model."
            ),
            "tiny_model_us_per_layer_step": tiny.pop("us_per_layer_step"),
            "steer_absolute_minus_bare_us": tiny.pop("steer_absolute_minus_bare_us"),
            "steer_relative_minus_bare_us": tiny.pop("steer_relative_minus_bare_us"),
            "tiny_model": tiny,
        }
        if not args.tiny_only:
            results["gemma"] = {
                "n_new_tokens": n_tokens,
                "repetitions": reps,
                **gemma_overhead(reps, n_tokens),
            }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
