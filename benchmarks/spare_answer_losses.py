"""spare's answer losses (the confidence targets of `split_facts`) on spare --quick's labelled
prompts and the embedded Gemma 3 270M, each text run whole (`text_losses`, twice per prompt)
against each prompt run once (`answer_losses`: shared tokens cached, chunked unembedding),
interleaved in one process, with the largest relative difference between them.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/spare_answer_losses.py [--reps 1] [--json F]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch

import steerscope as ss
from steerscope.context import build_context
from steerscope.experiments.spare.phases import split_facts
from steerscope.runner import get_experiment, make_config
from steerscope.steering.spare import ANSWER_TEMPLATE, answer_losses
from steerscope.text_losses import text_losses

sys.path.insert(0, str(Path(__file__).parent))
from interleaved import finish, median_ratio, time_interleaved  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    model = ss.load()
    experiment = get_experiment("spare")
    context = build_context(None, model, {}, experiment.data_kinds, {})
    facts = split_facts(make_config(experiment, {"quick": True}), context)
    groups = {
        label: (
            [e.prompt for e in examples],
            [e.record.sub_answer[0] for e in examples],
            [e.record.org_answer[0] for e in examples],
        )
        for label, examples in facts.groups.items()
    }

    def texts(prompts: list[str], answers: list[str]) -> list[str]:
        return [ANSWER_TEMPLATE.format(prompt=p, answer=a) for p, a in zip(prompts, answers, strict=True)]

    def whole() -> dict[str, tuple[torch.Tensor, ...]]:
        return {
            label: (text_losses(model, texts(prompts, to_c)), text_losses(model, texts(prompts, to_m)))
            for label, (prompts, to_c, to_m) in groups.items()
        }

    def shared() -> dict[str, tuple[torch.Tensor, ...]]:
        return {label: answer_losses(model, *group) for label, group in groups.items()}

    seconds, first = time_interleaved({"whole": whole, "shared": shared}, args.reps, warm_up=False)
    difference = max(
        ((new - old).abs() / old.abs()).max().item()
        for label in groups
        for old, new in zip(first["whole"][label], first["shared"][label], strict=True)
    )
    results = {
        "reps": args.reps,
        "torch_threads": torch.get_num_threads(),
        "prompts": {label: len(group[0]) for label, group in groups.items()},
        "median_seconds": {name: round(statistics.median(s), 1) for name, s in seconds.items()},
        "seconds": {name: [round(x, 1) for x in s] for name, s in seconds.items()},
        "shared_over_whole": round(median_ratio(seconds, "shared", "whole"), 3),
        "max_relative_difference": difference,
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
