"""Choosing the layer to steer: candidate layers spread over the network, and the trial that
steers the harvested problems at each and keeps the layer with the fewest tokens per correct answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from steerscope.data.arithmetic import Problem, Style, few_shot_prompt
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.build import diff_of_means
from steerscope.steering.efficiency import Harvest, PairActivations
from steerscope.steering.generation import Generation, PromptFn, Setting, solve_in_settings, summarize
from steerscope.steering.vector import SteeringVector


def spread_layers(n_layers: int, k: int, skip_first: bool = False) -> list[int]:
    """At most `k` layers spread evenly from the first (`skip_first`: the second) to the last but
    one (the last steers the unembedding); one layer is the middle candidate (the upper of two);
    a network with no such layer gives all its layers."""
    candidates = list(range(1 if skip_first else 0, n_layers - 1)) or list(range(n_layers))
    if k >= len(candidates):
        return candidates
    if k <= 1:
        return [candidates[len(candidates) // 2]]
    return sorted({candidates[round(i * (len(candidates) - 1) / (k - 1))] for i in range(k)})


def evaluate(
    model: ModelLike,
    problems: Sequence[Problem],
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    style: Style = "standard",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
) -> tuple[dict[str, Any], list[Generation]]:
    """Greedy solutions of `problems` after `prompt` in `style`, steered at generated tokens with
    relative `strength` (0: unsteered); returns `summarize(...)` and the generations."""
    length = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, prompt=prompt, progress=progress)
    return evaluate_settings(model, problems, [Setting(vector, strength, style)], **length)[0]


def evaluate_settings(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
) -> list[tuple[dict[str, Any], list[Generation]]]:
    """`evaluate` in each setting (prompt style, vector, relative strength), every setting of a
    batch of problems in one generation call (`solve_in_settings`); one (summary, generations)
    per setting, each what `evaluate` gives for it alone."""
    solutions = solve_in_settings(
        model,
        problems,
        settings,
        prompt,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    return [(summarize(generations), generations) for generations in solutions]


def steering_effects(
    model: ModelLike,
    harvest: Harvest,
    layers: Sequence[int],
    strength: float,
    kind: str = "resid_post",
    n_problems: int = 16,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
    activations: PairActivations | None = None,
) -> list[dict[str, Any]]:
    """What each layer's direction does as steering: greedy standard-prompt solutions of the first
    `n_problems` harvested problems, unsteered (row with layer None) and steered at `strength` with
    each layer's concise-minus-verbose direction (fitted on all pairs); one `summarize` row each.

    The layer to steer is chosen by this rather than by held-out separation: a solution's mean
    residual tells concise from verbose solutions by their words alone, already at the token
    embeddings, so the best-separating layer can be one where adding the difference does not make
    the model write less (on `organism:length` it was layer 0, and it lengthened solutions).
    `activations`: `pair_activations` of the harvest at (at least) these layers, when already
    captured for `efficiency_vector`.
    """
    loaded = as_model(model)
    problems = [pair.problem for pair in harvest.pairs[:n_problems]]
    sites = [Site(layer, kind) for layer in layers]
    fitted = diff_of_means(
        loaded,
        [(p.prompt, p.concise) for p in harvest.pairs],
        [(p.prompt, p.verbose) for p in harvest.pairs],
        sites,
        reduce="completion_mean",
        activations=activations,
    )
    singles = [
        SteeringVector({str(site): fitted.directions[str(site)]}, fitted.fingerprint) for site in sites
    ]
    summaries = evaluate_settings(
        loaded,
        problems,
        [Setting()] + [Setting(single, strength) for single in singles],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        prompt=prompt,
        progress=progress,
    )
    return [
        {"layer": layer, "strength": 0.0 if layer is None else strength, **summary}
        for layer, (summary, _) in zip([None, *layers], summaries, strict=True)
    ]


def best_layer(effects: Sequence[dict[str, Any]]) -> int:
    """The steered layer of `steering_effects` with the fewest generated tokens per correct answer
    (the first candidate when no layer keeps a correct answer)."""
    steered = [row for row in effects if row["layer"] is not None]
    if not steered:
        raise ValueError("no steered layer in the effects")
    per_correct = [
        math.inf if row["tokens_per_correct"] is None else row["tokens_per_correct"] for row in steered
    ]
    return int(steered[per_correct.index(min(per_correct))]["layer"])
