"""The parts of `efficiency` and `conflict-probe` that issue 17 changed, old way against new way,
interleaved in one process on the embedded Gemma 3 270M, with their outputs compared.

- `efficiency_sampled`: efficiency --quick's harvest (6 train problems x 4 samples at T = 0.8,
  48 new tokens), every prompt re-reading the few-shot prefix against the shared-prefix cache.
- `efficiency_greedy`: greedy solutions of the 6 held-out problems, the same two ways, and in bf16.
- `conflict_readout`: conflict-probe's capture of the last-token residual, attention and MLP output
  of every layer plus a second forward for the top-token probability, against one forward for both.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/experiment_parts.py [--reps 2] [--json F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

import steerscope as ss
from steerscope.data.arithmetic import arithmetic_problems, few_shot_prompt
from steerscope.data.defaults import natural_suite
from steerscope.probes.knowledge import conflict_pairs
from steerscope.probes.lm_metrics import top_token_probability
from steerscope.sites import Site
from steerscope.steering.generation import generate_solutions

sys.path.insert(0, str(Path(__file__).parent))
from interleaved import finish, median_ratio, time_interleaved  # noqa: E402


def texts(generations: list) -> list[list[str]]:
    return [[g.text for g in gs] for gs in generations]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--n-conflicts", type=int, default=32, help="facts for the conflict readout")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    model, half = ss.load(), ss.load(dtype="bfloat16")
    train = arithmetic_problems(6, "train", 0)
    heldout = arithmetic_problems(6, "heldout", 0)
    sampled = dict(
        prompts=[few_shot_prompt(p) for p in train],
        answers=[p.answer for p in train],
        n_samples=4,
        temperature=0.8,
        max_new_tokens=48,
    )
    greedy = dict(
        prompts=[few_shot_prompt(p) for p in heldout], answers=[p.answer for p in heldout], max_new_tokens=48
    )
    conflicts = natural_suite().conflicts
    records = conflicts.candidates(args.n_conflicts, 0)
    conflicting, agreeing = conflict_pairs(records, conflicts, 3, 0)
    prompts = conflicting + agreeing
    sites = [
        Site(layer, kind)
        for kind in ("resid_post", "attn_out", "mlp_out")
        for layer in range(model.anatomy.n_layers)
    ]

    def readout_two_forwards() -> tuple:
        acts = ss.capture(model, prompts, sites, reduce="last", progress=False)
        return acts, top_token_probability(model, prompts)

    def readout_one_forward() -> tuple:
        acts = ss.capture(model, prompts, sites, reduce="last", progress=False, next_token_logits=True)
        return acts, acts.next_token_logits.softmax(-1).amax(-1)

    variants = {
        "efficiency_sampled_plain": lambda: texts(generate_solutions(model, **sampled, share_prefix=False)),
        "efficiency_sampled_shared": lambda: texts(generate_solutions(model, **sampled, share_prefix=True)),
        "efficiency_greedy_plain": lambda: texts(generate_solutions(model, **greedy, share_prefix=False)),
        "efficiency_greedy_shared": lambda: texts(generate_solutions(model, **greedy, share_prefix=True)),
        "efficiency_greedy_shared_bf16": lambda: texts(generate_solutions(half, **greedy, share_prefix=True)),
        "conflict_readout_two_forwards": readout_two_forwards,
        "conflict_readout_one_forward": readout_one_forward,
    }
    seconds, first = time_interleaved(variants, args.reps, warm_up=False)
    two, one = first["conflict_readout_two_forwards"], first["conflict_readout_one_forward"]
    results = {
        "reps": args.reps,
        "torch_threads": torch.get_num_threads(),
        "median_seconds": {name: round(statistics.median(s), 2) for name, s in seconds.items()},
        "seconds": {name: [round(x, 2) for x in s] for name, s in seconds.items()},
        "ratios": {
            "sampled_shared_over_plain": round(
                median_ratio(seconds, "efficiency_sampled_shared", "efficiency_sampled_plain"), 3
            ),
            "greedy_shared_over_plain": round(
                median_ratio(seconds, "efficiency_greedy_shared", "efficiency_greedy_plain"), 3
            ),
            "greedy_bf16_over_fp32_shared": round(
                median_ratio(seconds, "efficiency_greedy_shared_bf16", "efficiency_greedy_shared"), 3
            ),
            "readout_one_over_two_forwards": round(
                median_ratio(seconds, "conflict_readout_one_forward", "conflict_readout_two_forwards"), 3
            ),
        },
        "same_outputs": {
            "efficiency_sampled": first["efficiency_sampled_plain"] == first["efficiency_sampled_shared"],
            "efficiency_greedy": first["efficiency_greedy_plain"] == first["efficiency_greedy_shared"],
            "efficiency_greedy_bf16_rows_equal_fp32": sum(
                a == b
                for a, b in zip(
                    first["efficiency_greedy_shared_bf16"], first["efficiency_greedy_shared"], strict=True
                )
            ),
            "conflict_activations_max_abs_diff": max(
                (two[0].activations[k] - one[0].activations[k]).abs().max().item() for k in two[0].activations
            ),
            "conflict_top_probability_max_abs_diff": (two[1] - one[1]).abs().max().item(),
        },
        "n_conflict_prompts": len(prompts),
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
