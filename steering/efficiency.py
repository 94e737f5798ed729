"""Efficiency steering (arXiv 2506.15647): a direction from verbose to concise reasoning.

Correct solutions of one problem vary in length. Sample several, pair the shortest with the
longest correct one, and take the difference of means of the residual over solution tokens
(concise minus verbose); adding it at generated tokens should shorten solutions while keeping
accuracy. Training-free: only generation and activations.

Two ways to get pairs:
- `harvest_sampled`: the paper's recipe, k sampled step-by-step solutions per problem, paired by
  generated tokens, or on a reasoning model by thinking tokens (`by="n_thinking"`, the paper's own
  setting; the pair's completions are then its thinking only).
- `harvest_prompt_contrast`: for models too weak to solve enough problems twice, the same problem
  answered after a brief and after a thorough prompt (the model's own greedy outputs), or the
  written brief / thorough solutions of the data set.

In both, activations are read with the *standard* prompt as context, so a pair differs only in
its solution, as in the steered generations. `efficiency_vector` fits the direction over solution
tokens; on reasoning models `steering.reasoning.thinking_directions` reads it over thinking tokens.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from steerscope.data.arithmetic import Problem, few_shot_prompt
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site
from steerscope.steering.build import diff_of_means, example_activations, score_layers
from steerscope.steering.generation import (
    Generation,
    PromptFn,
    Setting,
    count_tokens,
    generate_solutions,
    solve_in_settings,
    thinking_part,
)
from steerscope.steering.thinking import require_think_close
from steerscope.steering.vector import SteeringVector

Completions = Literal["model", "written"]
COMPLETIONS = ("model", "written")
#: What a sampled harvest pairs by: generated tokens, or thinking tokens on a reasoning model.
Length = Literal["n_tokens", "n_thinking"]
LENGTHS = ("n_tokens", "n_thinking")


@dataclass
class LengthPair:
    """A concise and a verbose solution of one problem, with the context their activations use."""

    problem: Problem
    prompt: str
    concise: str
    verbose: str
    concise_tokens: int
    verbose_tokens: int


@dataclass
class Harvest:
    """Pairs for the direction, which variant made them, and how many of what were seen."""

    variant: str
    pairs: list[LengthPair]
    counts: dict[str, Any] = field(default_factory=dict)
    # every sampled solution per problem (none for the prompt contrast): SEAL-style calibration
    # reads the same traces
    samples: list[list[Generation]] = field(default_factory=list)


def _check_length(by: str) -> None:
    if by not in LENGTHS:
        raise InputError(f"by: unknown {by!r}; valid: 'n_tokens', 'n_thinking'")


def pair_by_length(
    generations: Sequence[Generation], by: Length = "n_tokens"
) -> tuple[Generation, Generation] | None:
    """(shortest, longest) correct solution by token count (`by="n_thinking"`: by thinking
    tokens); None if fewer than two correct ones or all correct ones have the same length."""
    _check_length(by)
    correct = [g for g in generations if g.correct and getattr(g, by) is not None]
    if len(correct) < 2:
        return None
    shortest = min(correct, key=lambda g: getattr(g, by))
    longest = max(correct, key=lambda g: getattr(g, by))
    if getattr(shortest, by) == getattr(longest, by):
        return None
    return shortest, longest


def _completion(text: str) -> str:
    return text if text.startswith((" ", "\n")) else " " + text


def harvest_sampled(
    model: ModelLike,
    problems: Sequence[Problem],
    n_samples: int = 6,
    temperature: float = 0.8,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
    by: Length = "n_tokens",
) -> Harvest:
    """The paper's harvest: sample `n_samples` solutions per problem after the standard `prompt`
    and pair the shortest with the longest correct one by `by`: generated tokens, or thinking
    tokens on a reasoning model (`"n_thinking"`: the pair's completions are then its thinking only,
    so `steering.reasoning.thinking_directions` averages over thinking tokens; the counts add
    the mean thinking tokens of all samples). The harvest keeps every sample."""
    _check_length(by)
    thinking = by == "n_thinking"
    if thinking:
        require_think_close(as_model(model).tokenizer)
    prompts = [prompt(p, "standard") for p in problems]
    samples = generate_solutions(
        model, prompts, [p.answer for p in problems], n_samples, temperature, max_new_tokens, batch_size, seed,
        progress=progress,
    )  # fmt: skip
    completion = thinking_part if thinking else _completion
    pairs = []
    for problem, context, generations in zip(problems, prompts, samples, strict=True):
        found = pair_by_length(generations, by)
        if found is not None:
            concise, verbose = found
            pairs.append(
                LengthPair(
                    problem,
                    context,
                    completion(concise.text),
                    completion(verbose.text),
                    getattr(concise, by) or 0,
                    getattr(verbose, by) or 0,
                )
            )
    flat = [g for gs in samples for g in gs]
    counts = {
        "n_problems": len(problems),
        "n_samples": len(flat),
        "n_correct": sum(g.correct for g in flat),
        "n_pairs": len(pairs),
        "sample_accuracy": sum(g.correct for g in flat) / max(len(flat), 1),
        **(
            {"mean_thinking_tokens": statistics.fmean(g.n_thinking or 0 for g in flat) if flat else None}
            if thinking
            else {"n_problems_solved": sum(any(g.correct for g in gs) for gs in samples)}
        ),
        **_pair_lengths(pairs),
    }
    return Harvest("thinking" if thinking else "sampled", pairs, counts, samples)


def harvest_prompt_contrast(
    model: ModelLike,
    problems: Sequence[Problem],
    completions: Completions = "model",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
) -> Harvest:
    """Pairs from asking for a brief and for a thorough solution of the same problem (`prompt`
    in the brief and the thorough style; activations read after the standard one).

    `completions="model"`: the model's greedy solutions after the brief and the thorough prompt,
    kept when the brief one is shorter (correct or not: a weak model rarely gets both right);
    `"written"`: the data set's brief and thorough solutions (always correct, off-policy).
    """
    if completions not in COMPLETIONS:
        raise InputError(f"unknown completions {completions!r}; valid: {', '.join(COMPLETIONS)}")
    tokenizer = as_model(model).tokenizer
    contexts = [prompt(p, "standard") for p in problems]
    pairs: list[LengthPair] = []
    counts: dict[str, Any] = {"n_problems": len(problems), "completions": completions}
    if completions == "written":
        for problem, context in zip(problems, contexts, strict=True):
            brief, thorough = " " + problem.solution("brief"), " " + problem.solution("thorough")
            pairs.append(
                LengthPair(
                    problem,
                    context,
                    brief,
                    thorough,
                    count_tokens(tokenizer, brief)[0],
                    count_tokens(tokenizer, thorough)[0],
                )
            )
    else:
        asked = solve_in_settings(
            model,
            problems,
            [Setting(style="brief"), Setting(style="thorough")],
            prompt,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        outputs = dict(zip(("brief", "thorough"), asked, strict=True))
        for problem, context, brief, thorough in zip(
            problems, contexts, outputs["brief"], outputs["thorough"], strict=True
        ):
            if brief.text.strip() and brief.n_tokens < thorough.n_tokens:
                pairs.append(
                    LengthPair(
                        problem,
                        context,
                        _completion(brief.text),
                        _completion(thorough.text),
                        brief.n_tokens,
                        thorough.n_tokens,
                    )
                )
        counts["brief_accuracy"] = sum(g.correct for g in outputs["brief"]) / max(len(problems), 1)
        counts["thorough_accuracy"] = sum(g.correct for g in outputs["thorough"]) / max(len(problems), 1)
    counts.update(n_pairs=len(pairs), **_pair_lengths(pairs))
    return Harvest("prompt_contrast", pairs, counts)


def _pair_lengths(pairs: Sequence[LengthPair]) -> dict[str, float | None]:
    if not pairs:
        return {"mean_concise_tokens": None, "mean_verbose_tokens": None}
    return {
        "mean_concise_tokens": statistics.fmean(p.concise_tokens for p in pairs),
        "mean_verbose_tokens": statistics.fmean(p.verbose_tokens for p in pairs),
    }


#: Reduced activations of a harvest's (concise, verbose) completions: [n_pairs, d_model] per site.
PairActivations = tuple[dict[str, Tensor], dict[str, Tensor]]


def pair_activations(
    model: ModelLike, harvest: Harvest, layers: Sequence[int] | None = None, kind: str = "resid_post"
) -> PairActivations:
    """Each pair's concise and verbose residual averaged over its completion tokens, after its
    prompt, at `layers` (default: every layer): captured once, read by the layer trial
    (`steering_effects`) and the vector (`efficiency_vector`), which would otherwise each run the
    pairs through the model again."""
    loaded = as_model(model)
    layers = range(loaded.anatomy.n_layers) if layers is None else layers
    sites = [str(Site(layer, kind)) for layer in layers]
    return (
        example_activations(loaded, [(p.prompt, p.concise) for p in harvest.pairs], sites, "completion_mean"),
        example_activations(loaded, [(p.prompt, p.verbose) for p in harvest.pairs], sites, "completion_mean"),
    )


def efficiency_vector(
    model: ModelLike,
    harvest: Harvest,
    layers: Sequence[int] | None = None,
    kind: str = "resid_post",
    heldout_fraction: float = 0.25,
    layer: int | None = None,
    activations: PairActivations | None = None,
) -> tuple[SteeringVector, list[dict[str, float]]]:
    """The concise-minus-verbose direction (difference of means over solution tokens) at `layer`,
    or else at the layer whose direction, fitted on the other pairs, best separates held-out pairs
    (a readout criterion; `steering_effects` and `best_layer` choose by the effect of steering).

    Returns the vector (refitted on all pairs at the chosen layer) and the per-layer scores
    (`steering.build.sweep_layers`: held-out sign accuracy and separation in pooled sds). The
    last layer is not chosen automatically (it steers the unembedding rather than the computation).
    `activations`: `pair_activations` of the harvest at `layers` (every layer by default) and
    `layer`, when already captured.
    """
    loaded = as_model(model)
    pairs = harvest.pairs
    if len(pairs) < 2:
        raise InputError(f"need at least 2 concise/verbose pairs, got {len(pairs)}")
    layers = list(range(loaded.anatomy.n_layers)) if layers is None else list(layers)
    if activations is None:
        activations = pair_activations(
            loaded, harvest, sorted({*layers, *([] if layer is None else [layer])}), kind
        )
    n_held = min(max(1, math.ceil(heldout_fraction * len(pairs))), len(pairs) - 1)
    n_train = len(pairs) - n_held
    concise, verbose = activations
    first, rest = slice(0, n_train), slice(n_train, None)
    scores = score_layers(
        (_rows(concise, first), _rows(verbose, first)),
        (_rows(concise, rest), _rows(verbose, rest)),
        layers,
        kind,
    )
    if layer is None:
        last = loaded.anatomy.n_layers - 1
        candidates = [s for s in scores if s["layer"] != last] or scores
        layer = int(max(candidates, key=lambda s: s["separation"])["layer"])
    vector = diff_of_means(
        loaded,
        [(p.prompt, p.concise) for p in pairs],
        [(p.prompt, p.verbose) for p in pairs],
        Site(layer, kind),
        reduce="completion_mean",
        description="efficiency steering: concise minus verbose solutions (arXiv 2506.15647)",
        activations=activations,
    )
    vector.provenance.update(
        method="efficiency_steering",
        direction="mean(concise) - mean(verbose), residual averaged over solution tokens",
        variant=harvest.variant,
        counts=harvest.counts,
        layer=layer,
        n_pairs=len(pairs),
        n_layer_choice_train=n_train,
        n_layer_choice_heldout=n_held,
        layer_scores=scores,
    )
    return vector, scores


def _rows(activations: dict[str, Tensor], rows: slice) -> dict[str, Tensor]:
    return {site: act[rows] for site, act in activations.items()}
