"""Efficiency steering on reasoning models (a tokenizer with a single `</think>` token): the
concise-minus-verbose direction read over thinking tokens (2506.15647) or over thought delimiters,
and evaluation under thinking-time steering or a thinking budget with 95% bootstrap intervals over
problems (several samples of one problem are not independent; `steerscope.probes.intervals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from steerscope.data.arithmetic import Problem, Style, few_shot_prompt
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.probes.intervals import paired_ratio_change, ratio_interval
from steerscope.sites import Site
from steerscope.steering.build import diff_of_means
from steerscope.steering.efficiency import Harvest
from steerscope.steering.generation import Generation, PromptFn, generate_solutions, summarize
from steerscope.steering.thinking import ThinkingSteer, delimiter_activations
from steerscope.steering.vector import Fingerprint, SteeringVector


def thinking_directions(
    model: ModelLike,
    harvest: Harvest,
    layers: Sequence[int],
    kind: str = "resid_post",
    read: Literal["thinking", "delimiters"] = "thinking",
    delimiter: str = "\n\n",
) -> dict[int, SteeringVector]:
    """The concise-minus-verbose direction at each of `layers`: the mean residual of the concise
    trace minus that of the verbose trace, averaged over pairs, with each trace's residual
    averaged over its thinking tokens (`read="thinking"`, 2506.15647) or over its thought
    delimiters only (`read="delimiters"`, where the model decides whether to check again; see
    `steering.thinking.delimiter_activations`)."""
    loaded = as_model(model)
    if len(harvest.pairs) < 1:
        raise InputError("need at least 1 concise/verbose pair; sample more problems or more traces each")
    if read not in ("thinking", "delimiters"):
        raise InputError(f"read: unknown {read!r}; valid: 'thinking', 'delimiters'")
    sites = [Site(layer, kind) for layer in layers]
    concise = [(p.prompt, p.concise) for p in harvest.pairs]
    verbose = [(p.prompt, p.verbose) for p in harvest.pairs]
    if read == "thinking":
        directions = diff_of_means(loaded, concise, verbose, sites, reduce="completion_mean").directions
    else:
        means = [_delimiter_means(loaded, traces, sites, delimiter) for traces in (concise, verbose)]
        directions = {str(site): means[0][str(site)] - means[1][str(site)] for site in sites}
    provenance = dict(
        method="efficiency_steering",
        direction=f"mean(concise) - mean(verbose), residual averaged over {read} tokens",
        read=read,
        delimiter=delimiter if read == "delimiters" else None,
        variant=harvest.variant,
        counts=harvest.counts,
        n_pairs=len(harvest.pairs),
    )
    fingerprint = Fingerprint.of(loaded)
    return {
        site.layer: SteeringVector(
            {str(site): directions[str(site)]}, fingerprint, {**provenance, "layer": site.layer}
        )
        for site in sites
    }


def _delimiter_means(
    model: ModelLike, traces: Sequence[tuple[str, str]], sites: Sequence[Site], delimiter: str
) -> dict[str, torch.Tensor]:
    """Per site: the mean over traces of each trace's mean residual at its thought delimiters."""
    found = [t for t in delimiter_activations(model, traces, sites, delimiter) if t.thoughts]
    if not found:
        raise InputError(f"no trace has a thought delimiter {delimiter!r} before </think>")
    return {
        str(site): torch.stack([t.activations[str(site)].mean(0) for t in found]).mean(0) for site in sites
    }


def evaluate_thinking(
    model: ModelLike,
    problems: Sequence[Problem],
    prompt: PromptFn = few_shot_prompt,
    style: Style = "standard",
    n_samples: int = 1,
    temperature: float | None = None,
    thinking_steer: ThinkingSteer | None = None,
    budget: int | None = None,
    max_new_tokens: int = 160,
    batch_size: int = 32,
    seed: int = 0,
) -> tuple[dict[str, Any], list[list[Generation]]]:
    """Solutions of `problems` after `prompt` in `style` (greedy, or `n_samples` each at
    `temperature`), optionally steered while thinking or held to a thinking `budget`; returns
    `summarize(...)` with 95% intervals over problems (`problem_intervals`) and the samples."""
    samples = generate_solutions(
        model,
        [prompt(p, style) for p in problems],
        [p.answer for p in problems],
        n_samples,
        temperature,
        max_new_tokens,
        batch_size,
        seed,
        thinking_steer=thinking_steer,
        budget=budget,
    )
    summary = summarize([g for gs in samples for g in gs])
    return {**summary, **problem_intervals(samples, seed=seed)}, samples


def _per_problem(samples: Sequence[Sequence[Generation]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per problem: correct answers, thinking tokens (total tokens without thinking), samples."""
    correct = torch.tensor([sum(g.correct for g in gs) for gs in samples], dtype=torch.float64)
    tokens = torch.tensor(
        [sum(g.n_tokens if g.n_thinking is None else g.n_thinking for g in gs) for gs in samples],
        dtype=torch.float64,
    )
    n = torch.tensor([len(gs) for gs in samples], dtype=torch.float64)
    return correct, tokens, n


def problem_intervals(
    samples: Sequence[Sequence[Generation]], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, list[float]]:
    """Bootstrap intervals of accuracy and mean thinking tokens (all tokens for a model without
    `</think>`), resampling problems (several samples of one problem are not independent)."""
    if not samples or any(not gs for gs in samples):
        raise InputError("need at least one generation for every problem")
    correct, tokens, n = _per_problem(samples)
    return {
        "accuracy_ci": list(ratio_interval(correct, n, level, n_boot, seed)),
        "mean_thinking_ci": list(ratio_interval(tokens, n, level, n_boot, seed)),
    }


def paired_change(
    base: Sequence[Sequence[Generation]],
    other: Sequence[Sequence[Generation]],
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float | list[float]]:
    """How `other` differs from `base` on the same problems (in the same order): accuracy
    difference and relative change of mean thinking tokens, with paired bootstrap intervals."""
    if len(base) != len(other):
        raise InputError(f"paired_change needs the same problems: got {len(base)} and {len(other)}")
    (c0, t0, n0), (c1, t1, n1) = _per_problem(base), _per_problem(other)
    accuracy = paired_ratio_change((c1, n1), (c0, n0), False, level, n_boot, seed)
    thinking = paired_ratio_change((t1, n1), (t0, n0), True, level, n_boot, seed)
    return {
        "accuracy_change": accuracy["delta"],
        "accuracy_change_ci": [accuracy["low"], accuracy["high"]],
        "thinking_change": thinking["delta"],
        "thinking_change_ci": [thinking["low"], thinking["high"]],
    }
