"""Steering inside compiled generation: what a steering bank costs over the compiled model.

Greedy decoding with a static cache, on tiny llama and the embedded Gemma 3 270M (fp32; skipped
with `--tiny-only`), at batch 1 and 8, four variants timed side by side with interleaved,
rotating repetitions (`interleaved.time_interleaved`):

- `eager_plain`: `model.generate` on the uncompiled model;
- `compiled_plain`: the same on a copy whose forward is `torch.compile`d (inductor);
- `compiled_plain_twin`: a second, identical compiled copy, unsteered: the A/A control. Its ratio
  over `compiled_plain` (`aa_ratio`) is what the measurement resolves on this machine; a steered
  ratio within it is no cost that this run can see (on tiny llama, whose compiled step is ~1 ms of
  mostly Python, the A/A ratio moves by a few percent between runs);
- `compiled_steer_one_layer`: a compiled copy with a steering bank at one layer's resid_post,
  inside `steer(..., strength=0.1)`;
- `compiled_steer_all_layers`: the same with a bank and a direction at every layer.

Each copy is compiled before its bank is installed, as a user would (the bank then retraces the
graph once). Reported per model and batch: ms per decoded token (time of a generate call divided
by the new tokens, warm-up excluded; wall time, except tiny llama on a CPU: one thread and process
time, which leave out other processes' load, the noise that hides a percent there),
`compiled_steer_one_layer_ratio` and `compiled_steer_all_layers_ratio` (medians of per-repetition
ratios over `compiled_plain`), microseconds the all-layer bank adds per steered layer per decode
step, and `added_calls`: what a steered generate runs beyond the plain one, counted by cProfile so
load cannot blur it, split into `python_calls_per_step` and `kernel_launches_per_step` (the
difference between calls of n and 2n new tokens, per extra token: what every decode step pays) and
`python_calls_per_call` (the rest, paid once per `generate` call: entering and leaving the
block). Then
`recompiles_after_warmup`: graphs compiled while the warmed-up steered copies run blocks that
change the strength, its sign, the positions mode, and enter and leave (0 is the target).
Checked: compiled plain gives the eager tokens, and each steered copy the tokens of eager
`steer()` with the same vector.

Compiled with static shapes (`dynamic=False`), except Gemma 3: transformers' static cache keeps a
sliding window's length as a Python int, on which a static-shape graph specialises and recompiles
every decode step, steered or not; it compiles with automatic dynamic shapes (`dynamic=None`).
Runs unchanged on a GPU (`--device cuda`, the default when one is present).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compiled_steering.py --quick --json F
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compiled_steering.py --json runs/compiled_steering.json
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import os
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from interleaved import Variant, finish, median_ratio, time_interleaved
from steering_overhead import PROMPTS  # the same eight prompts, so the two benchmarks compare
from torch import Tensor
from torch._dynamo.testing import CompileCounterWithBackend

import steerscope
from steerscope.capture import tokenize_for_generate
from steerscope.model import Model
from steerscope.steering import Fingerprint, SteeringVector, install_steering_bank, steer
from steerscope.tiny import tiny_model

BATCHES = (1, 8)
TINY_REPS = 21
STRENGTH = 0.1


def random_vector(model: Model, layers: list[int], seed: int = 0) -> SteeringVector:
    generator = torch.Generator().manual_seed(seed)
    d_model = model.anatomy.d_model
    directions = {f"L{layer}.resid_post": torch.randn(d_model, generator=generator) for layer in layers}
    return SteeringVector(directions, Fingerprint.of(model))


def greedy(model: Model, inputs: dict[str, Tensor], n_tokens: int) -> Tensor:
    out = model.generate(
        **inputs,
        max_new_tokens=n_tokens,
        min_new_tokens=n_tokens,
        do_sample=False,
        cache_implementation="static",
    )
    if out.device.type == "cuda":
        torch.cuda.synchronize()
    return out


def compiled_copy(model: Model, counter: CompileCounterWithBackend) -> Model:
    """A copy of `model` whose forward is compiled with `counter` (inductor underneath)."""
    twin = Model(copy.deepcopy(model.hf), model.tokenizer, model.anatomy, model.source)
    dynamic = None if twin.anatomy.family.name.startswith("gemma3") else False
    twin.hf.forward = torch.compile(twin.hf.forward, backend=counter, dynamic=dynamic)
    return twin


def model_numbers(
    model: Model, reps: int, n_tokens: int, device: str, clock: Callable[[], float] = time.perf_counter
) -> dict[str, Any]:
    """Time the four variants at each batch size; count recompiles after warm-up; check tokens."""
    n_layers = model.anatomy.n_layers
    one_layer = random_vector(model, [n_layers // 2])
    all_layers = random_vector(model, list(range(n_layers)))
    counter = CompileCounterWithBackend("inductor")
    plain, plain_again = compiled_copy(model, counter), compiled_copy(model, counter)
    one, every = compiled_copy(model, counter), compiled_copy(model, counter)
    banks = [install_steering_bank(one, one_layer.sites), install_steering_bank(every, all_layers.sites)]

    def steered(
        twin: Model, vector: SteeringVector, inputs: dict[str, Tensor], n: int = n_tokens, **block: Any
    ) -> Variant:
        def run() -> Tensor:
            with steer(twin, vector, **({"strength": STRENGTH} | block)):
                return greedy(twin, inputs, n)

        return run

    per_batch: dict[str, Any] = {}
    checks: dict[str, bool] = {}
    for batch in BATCHES:
        inputs = {k: v.to(device) for k, v in tokenize_for_generate(model, list(PROMPTS[:batch])).items()}
        variants: dict[str, Variant] = {
            "eager_plain": lambda inputs=inputs: greedy(model, inputs, n_tokens),
            "compiled_plain": lambda inputs=inputs: greedy(plain, inputs, n_tokens),
            "compiled_plain_twin": lambda inputs=inputs: greedy(plain_again, inputs, n_tokens),
            "compiled_steer_one_layer": steered(one, one_layer, inputs),
            "compiled_steer_all_layers": steered(every, all_layers, inputs),
        }
        seconds, first = time_interleaved(variants, reps, clock=clock)
        key = f"batch_{batch}"
        references = {
            "compiled_steer_one_layer": steered(model, one_layer, inputs)(),
            "compiled_steer_all_layers": steered(model, all_layers, inputs)(),
        }
        checks[f"{key}_compiled_plain_equals_eager"] = torch.equal(
            first["compiled_plain"], first["eager_plain"]
        ) and torch.equal(first["compiled_plain_twin"], first["eager_plain"])
        for name, reference in references.items():
            checks[f"{key}_{name}_equals_eager_steer"] = torch.equal(first[name], reference)
            checks[f"{key}_{name}_changes_tokens"] = not torch.equal(first[name], first["eager_plain"])
        per_batch[key] = {
            "ms_per_token": {
                name: round(statistics.median(times) / n_tokens * 1e3, 3) for name, times in seconds.items()
            },
            "compiled_steer_one_layer_ratio": round(
                median_ratio(seconds, "compiled_steer_one_layer", "compiled_plain"), 4
            ),
            "compiled_steer_all_layers_ratio": round(
                median_ratio(seconds, "compiled_steer_all_layers", "compiled_plain"), 4
            ),
            "aa_ratio": round(median_ratio(seconds, "compiled_plain_twin", "compiled_plain"), 4),
            "compiled_plain_vs_eager_ratio": round(median_ratio(seconds, "compiled_plain", "eager_plain"), 4),
            "all_layers_us_per_layer_step": round(
                statistics.median(
                    (t - p) / (n_layers * n_tokens) * 1e6
                    for t, p in zip(
                        seconds["compiled_steer_all_layers"], seconds["compiled_plain"], strict=True
                    )
                ),
                2,
            ),
        }
        per_batch[key]["recompiles_after_warmup"] = recompiles(
            counter,
            lambda inputs=inputs: changing_blocks(one, every, one_layer, all_layers, inputs, n_tokens),
        )
        per_batch[key]["added_calls"] = {
            name: added_calls(
                lambda n, inputs=inputs: greedy(plain, inputs, n),
                lambda n, twin=twin, vector=vector, inputs=inputs: steered(twin, vector, inputs, n)(),
                n_tokens,
            )
            for name, twin, vector in (
                ("compiled_steer_one_layer", one, one_layer),
                ("compiled_steer_all_layers", every, all_layers),
            )
        }
    for bank in banks:
        bank.remove()
    return {
        "model": model.source,
        "n_layers": n_layers,
        "steered_layer": n_layers // 2,
        **per_batch,
        "recompiles_after_warmup": sum(per_batch[f"batch_{b}"]["recompiles_after_warmup"] for b in BATCHES),
        "tokens": checks,
    }


def changing_blocks(
    one: Model,
    every: Model,
    one_layer: SteeringVector,
    all_layers: SteeringVector,
    inputs: dict[str, Tensor],
    n_tokens: int,
) -> None:
    """Blocks a user changes between generations: strength, sign, positions; and plain calls."""
    for twin, vector in ((one, one_layer), (every, all_layers)):
        for strength, positions in ((0.25, "all"), (-0.1, "generated"), (0.05, "prompt"), (0.2, (0, 5))):
            with steer(twin, vector, strength=strength, positions=positions):
                greedy(twin, inputs, n_tokens)
            greedy(twin, inputs, n_tokens)


def call_counts(run: Variant, repeats: int = 3) -> tuple[int, int]:
    """(Python function calls, inductor CPU kernel launches) in a `run`, by cProfile: counts, not
    times, so other processes' load does not blur them. Builtins count as calls; a launch is a call
    of a compiled kernel (named `...kernel`: inductor's C++ kernels; 0 on a GPU). The fewest of
    `repeats` runs: a run now and then adds a few hundred calls (caches filled, collections)."""
    counts = []
    for _ in range(repeats):
        profile = cProfile.Profile()
        profile.runcall(run)
        stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
        calls = sum(row[1] for row in stats.values())
        launches = sum(row[1] for (_, _, name), row in stats.items() if name.endswith(".kernel>"))
        counts.append((calls, launches))
    return min(counts)


def added_calls(
    plain: Callable[[int], Tensor], steered: Callable[[int], Tensor], n_tokens: int
) -> dict[str, float]:
    """What `steered(n)` runs beyond `plain(n)` (each a generate of n new tokens): per decode step
    (from n and 2n tokens) and once per call. Each is run once first: a static cache of a new
    length compiles new graphs, which are not what a warm step costs."""
    for run in (plain, steered):
        run(2 * n_tokens)
    counts = {
        (run, n): call_counts(lambda run=run, n=n: run(n))
        for run in (plain, steered)
        for n in (n_tokens, 2 * n_tokens)
    }
    added = [
        [
            steered_count - plain_count
            for steered_count, plain_count in zip(counts[steered, n], counts[plain, n], strict=True)
        ]
        for n in (n_tokens, 2 * n_tokens)
    ]
    per_step = [(longer - shorter) / n_tokens for shorter, longer in zip(*added, strict=True)]
    return {
        "python_calls_per_step": round(per_step[0], 1),
        "kernel_launches_per_step": round(per_step[1], 1),
        "python_calls_per_call": round(added[0][0] - per_step[0] * n_tokens, 1),
    }


def recompiles(counter: CompileCounterWithBackend, run: Callable[[], Any]) -> int:
    """Graphs compiled while `run` runs."""
    before = counter.frame_count
    run()
    return counter.frame_count - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (default 5)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"Gemma: 3 repetitions of 16 tokens; tiny llama: {TINY_REPS} of 64 (cheap; it needs them)",
    )
    parser.add_argument("--tiny-only", action="store_true", help="skip the embedded Gemma 3 270M")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error(f"--reps must be at least 1, got {args.reps}")
    reps, n_tokens = (3, 16) if args.quick else (args.reps, 64)
    # a tiny step is ~1 ms, mostly Python: repetitions are cheap and the noise is large; on a CPU
    # it runs on one thread timed by process time, which leaves out what other processes take
    plan = {"tiny_llama": (max(reps, TINY_REPS), 64)}
    if not args.tiny_only:
        plan["gemma3_270m"] = (reps, n_tokens)
    tiny_on_cpu = args.device == "cpu"

    load_at_start = os.getloadavg()[0]
    results: dict[str, Any] = {
        "batches": list(BATCHES),
        "repetitions_and_new_tokens": plan,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
        "tiny_llama_clock": "process time, 1 thread" if tiny_on_cpu else "wall",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "notes": (
            "ms_per_token: time of one greedy generate call (static cache; wall, or see "
            "tiny_llama_clock) / new tokens, median "
            "over repetitions, warm-up excluded; *_ratio: medians of per-repetition ratios over "
            f"compiled_plain; steering is relative, strength {STRENGTH}, positions 'all'. aa_ratio: "
            "an identical unsteered compiled copy over compiled_plain, the run's resolution. "
            "all_layers_us_per_layer_step: (all layers - compiled plain) per steered layer per "
            "step. added_calls: Python calls and inductor kernel launches a steered generate makes "
            "beyond compiled_plain's, counted by cProfile: per decode step (from generates of n and "
            "2n tokens) and per call (entering and leaving the block). "
            "recompiles_after_warmup: graphs compiled during blocks that change strength, "
            "sign and positions and during plain calls between them, after the timed runs."
        ),
    }
    # The recompile limit counts every graph of a shared code object (transformers' forward
    # wrapper), across models: the copies here would pass the default of 8.
    with torch.inference_mode(), torch._dynamo.config.patch(recompile_limit=64):
        models = {"tiny_llama": lambda: tiny_model("llama"), "gemma3_270m": steerscope.load}
        threads = torch.get_num_threads()
        for name in plan:
            process = name == "tiny_llama" and tiny_on_cpu
            torch.set_num_threads(1 if process else threads)
            torch._dynamo.reset()
            model = models[name]()
            model.hf.to(args.device)
            clock = time.process_time if process else time.perf_counter
            results[name] = model_numbers(model, *plan[name], args.device, clock)
            del model
        torch.set_num_threads(threads)
    targets = [(name, batch) for name in plan for batch in BATCHES]
    results["compiled_steer_one_layer_ratio"] = max(
        results[m][f"batch_{b}"]["compiled_steer_one_layer_ratio"] for m, b in targets
    )
    results["compiled_steer_all_layers_ratio"] = max(
        results[m][f"batch_{b}"]["compiled_steer_all_layers_ratio"] for m, b in targets
    )
    results["aa_ratio_range"] = [
        min(results[m][f"batch_{b}"]["aa_ratio"] for m, b in targets),
        max(results[m][f"batch_{b}"]["aa_ratio"] for m, b in targets),
    ]
    results["recompiles_after_warmup"] = sum(results[m]["recompiles_after_warmup"] for m in plan)
    results["targets"] = {"one_layer_ratio": 1.01, "all_layers_ratio": 1.03, "recompiles_after_warmup": 0}
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
