"""Fisher cost: the batch-size-1 loop vs the batched per-sample path vs a plain backward.

On the embedded Gemma 3 270M (fp32), the diagonal empirical Fisher of the seven linear maps of
every layer over ToM samples (story + answer, loss on the answer; the samples `tom-sensitivity`
scores), timed side by side with interleaved repetitions (each repetition runs every variant
once, in an order that rotates between repetitions):

- `loop`: `probes.fisher.fisher_scores`, one forward and backward per sample (the reference);
- `batched`: `kernels.per_sample_grads.batched_fisher_scores`, `--batch-size` samples per pass;
- `plain_backward`: the same batches, the same summed loss and the same gathered logits, with an
  ordinary `torch.autograd.grad` to the seven weights: the batch gradient, which is what a
  training step costs and what the per-sample path must not be much slower than.

Ratios are medians of per-repetition ratios: `ratio_loop_vs_batched` (target >= 3) and
`ratio_batched_vs_plain_backward` (target <= 2). Checked on the timed results: the batched
Fisher equals the loop's (`max_relative_error`, max over matrices of max|diff| / max|loop|); and,
because fp32 rounding alone separates the two by ~1e-4 on some Gemma matrices, both against the
loop on an fp64 copy of the model over the first 8 samples (4 with `--quick`): `fp64_check`.

Run (`--quick` is a smoke run with 16 samples and 1 repetition):

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fisher.py --json runs/fisher_benchmark.json
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/fisher.py --quick
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from interleaved import Variant, finish, median_ratio, time_interleaved
from torch import Tensor

import steerscope
from steerscope.data.tom import tom_mixture
from steerscope.kernels.per_sample_grads import batch_loss, batched_fisher_scores, linear_modules, pad_batch
from steerscope.model import Model
from steerscope.probes.fisher import LossSample, fisher_scores
from steerscope.probes.tom_fisher import tom_fisher_samples


def plain_backward(model: Model, samples: Sequence[LossSample], batch_size: int) -> list[Tensor]:
    """Batch gradients of the seven weights of every layer, over the batches the batched path uses.

    Returns the last batch's gradients (so the work cannot be skipped). Restores requires_grad.
    """
    hf = model.hf
    weights = [m.weight for m in linear_modules(model).values()]
    order = sorted(range(len(samples)), key=lambda i: len(samples[i].input_ids))
    flags = [(p, p.requires_grad) for p in hf.parameters()]
    grads: list[Tensor] = []
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            for start in range(0, len(order), batch_size):
                batch = pad_batch([samples[i] for i in order[start : start + batch_size]])
                inputs_embeds = hf.get_input_embeddings()(batch["input_ids"])
                grads = list(torch.autograd.grad(batch_loss(hf, batch, inputs_embeds), weights))
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
    return grads


def max_relative_error(got: dict[str, Tensor], want: dict[str, Tensor]) -> float:
    """max over matrices of max|got - want| / max|want|."""
    return max(float((got[n] - want[n]).abs().max() / want[n].abs().max()) for n in want)


def fp64_check(samples: Sequence[LossSample], batch_size: int) -> dict[str, Any]:
    """Both fp32 paths against the loop run on an fp64 copy of the model, on `samples`.

    Rounding in fp32 differs between a 1-row and an n-row pass; on Gemma 3 some matrices turn
    that into a ~1e-4 difference between the two fp32 paths, so their distance alone does not
    say which one is off. The fp64 loop does.
    """
    model = steerscope.load()
    loop = fisher_scores(model, samples, progress=False)
    batched = batched_fisher_scores(model, samples, batch_size=batch_size, progress=False)
    model.hf.double()
    exact = fisher_scores(model, samples, progress=False)
    return {
        "n_samples": len(samples),
        "loop_fp32_vs_fp64": max_relative_error(loop, exact),
        "batched_fp32_vs_fp64": max_relative_error(batched, exact),
    }


def fisher_benchmark(n_samples: int, reps: int, batch_size: int, precision_samples: int) -> dict[str, Any]:
    model = steerscope.load()
    samples = tom_fisher_samples(model, tom_mixture("fisher", n_samples))
    variants: dict[str, Variant] = {
        "loop": lambda: fisher_scores(model, samples, progress=False),
        "batched": lambda: batched_fisher_scores(model, samples, batch_size=batch_size, progress=False),
        "plain_backward": lambda: plain_backward(model, samples, batch_size),
    }
    warm_up = samples[: min(2, len(samples))]  # first-call costs (allocator, kernels), not a full run
    fisher_scores(model, warm_up, progress=False)
    batched_fisher_scores(model, warm_up, batch_size=batch_size, progress=False)
    plain_backward(model, warm_up, batch_size)

    seconds, results = time_interleaved(variants, reps, warm_up=False)
    lengths = [len(s.input_ids) for s in samples]
    return {
        "model": model.source,
        "n_layers": model.anatomy.n_layers,
        "n_samples": n_samples,
        "batch_size": batch_size,
        "tokens_per_sample": {
            "min": min(lengths),
            "mean": round(statistics.fmean(lengths), 1),
            "max": max(lengths),
        },
        "median_seconds": {name: round(statistics.median(s), 3) for name, s in seconds.items()},
        "seconds": {name: [round(t, 3) for t in s] for name, s in seconds.items()},
        "ratio_loop_vs_batched": round(median_ratio(seconds, "loop", "batched"), 3),
        "ratio_batched_vs_plain_backward": round(median_ratio(seconds, "batched", "plain_backward"), 3),
        "targets": {"ratio_loop_vs_batched": ">= 3", "ratio_batched_vs_plain_backward": "<= 2"},
        "max_relative_error": max_relative_error(results["batched"], results["loop"]),
        "fp64_check": fp64_check(samples[:precision_samples], batch_size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--samples", type=int, default=64, help="ToM samples (default 64)")
    parser.add_argument("--reps", type=int, default=2, help="interleaved repetitions (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batched pass (default 8)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 samples, 1 repetition")
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: torch's); 1 avoids spin-waits on a busy CPU"
    )
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    for name in ("samples", "reps", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    n_samples, reps, precision_samples = (16, 1, 4) if args.quick else (args.samples, args.reps, 8)

    load_at_start = os.getloadavg()[0]
    results = {
        "repetitions": reps,
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "notes": (
            "Seconds per full Fisher over the samples, warm-up (2 samples per variant) excluded; "
            "ratios are medians of per-repetition ratios; errors are max over matrices of "
            "max|diff| / max|reference|. plain_backward = the batched path's "
            "batches, loss and gathered logits with an ordinary batch gradient of the seven weights."
        ),
        **fisher_benchmark(n_samples, reps, args.batch_size, precision_samples),
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
