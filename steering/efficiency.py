"""Efficiency steering (arXiv 2506.15647): a direction from verbose to concise reasoning.

Correct solutions of one problem vary in length. Sample several, pair the shortest with the
longest correct one, and take the difference of means of the residual over solution tokens
(concise minus verbose); adding it at generated tokens should shorten solutions while keeping
accuracy. Training-free: only generation and activations.

Two ways to get pairs:
- `harvest_sampled`: the paper's recipe, k sampled step-by-step solutions per problem.
- `harvest_prompt_contrast`: for models too weak to solve enough problems twice, the same problem
  answered after a brief and after a thorough prompt (the model's own greedy outputs), or the
  written brief / thorough solutions of the data set.

In both, activations are read with the *standard* prompt as context, so a pair differs only in
its solution, as in the steered generations. Prompts come from a `prompt(problem, style)` function:
the few-shot prompts of `steerscope.data.arithmetic` by default, a model organism's cue prompts
from its data suite. A solution ends at the model's end-of-sequence token or at the stop rule (a
blank line or a next "Question:"). Reasoning models: when the tokenizer has a single `</think>`
token, tokens up to and including it are counted as thinking tokens, and the stop rule applies only
after it.

On reasoning models, the paper's own setting: `harvest_thinking` pairs sampled traces by thinking
tokens and `thinking_directions` averages over thinking tokens only; `generate_solutions` and
`evaluate_thinking` take a `ThinkingSteer` (steering only before `</think>`, or at thought
delimiters for SEAL-style calibration, `steering.seal`) or a hard thinking `budget`;
`pick_steering` is the dev-split choice rule (`steering.frontier` applies it); `problem_intervals`
and `paired_change` give bootstrap intervals over problems.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from steerscope.capture import tokenize_for_generate
from steerscope.data.arithmetic import Problem, Style, extract_answer, few_shot_prompt
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.prefix_cache import prefixed_batch
from steerscope.sites import Site
from steerscope.steering.apply import steer
from steerscope.steering.build import diff_of_means, sweep_layers
from steerscope.steering.thinking import (
    THINK_CLOSE,
    ThinkingBudget,
    ThinkingSteer,
    delimiter_activations,
    require_think_close,
    steer_thinking,
    think_close_id,
)
from steerscope.steering.vector import Fingerprint, SteeringVector

STOP_MARKERS = ("\n\n", "Question:")
Completions = Literal["model", "written"]
COMPLETIONS = ("model", "written")
#: Builds the prompt of a problem in a style: `few_shot_prompt` on natural data, an organism's own
#: cue prompt (`ProblemData.prompt` of its data suite) on a model organism.
PromptFn = Callable[[Problem, Style], str]


@dataclass
class Generation:
    """One solution: truncated text, its token counts, the number it ends with, and correctness."""

    text: str
    n_tokens: int
    n_thinking: int | None
    predicted: int | None
    correct: bool


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


def stop_index(text: str, thinking: bool = False) -> int | None:
    """Where a solution ends: the first blank line or "Question:" after its start (after
    `</think>` for reasoning models); None if it has not ended."""
    start = len(text) - len(text.lstrip())
    if thinking:
        close = text.find(THINK_CLOSE)
        if close < 0:
            return None
        start = close + len(THINK_CLOSE)
    found = [i for i in (text.find(m, start) for m in STOP_MARKERS) if i >= 0]
    return min(found) if found else None


def truncate_solution(text: str, thinking: bool = False) -> str:
    """The solution part of a generated continuation, without what follows its end."""
    cut = stop_index(text, thinking)
    return (text if cut is None else text[:cut]).rstrip()


def count_tokens(tokenizer: Any, text: str) -> tuple[int, int | None]:
    """(tokens, thinking tokens) of a solution; thinking is None without a `</think>` token, and
    every token while `</think>` has not come yet."""
    n = len(tokenizer(text, add_special_tokens=False).input_ids)
    if think_close_id(tokenizer) is None:
        return n, None
    close = text.find(THINK_CLOSE)
    if close < 0:
        return n, n
    return n, len(tokenizer(text[: close + len(THINK_CLOSE)], add_special_tokens=False).input_ids)


def answer_part(text: str) -> str:
    """The text after `</think>` if there is one: where a reasoning model states its answer."""
    return text.split(THINK_CLOSE)[-1]


class StopAtSolutionEnd(StoppingCriteria):
    """Stops each row once its continuation contains the end of a solution (`stop_index`)."""

    def __init__(self, tokenizer: Any, prompt_length: int, thinking: bool) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.thinking = thinking
        self.skip = {tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.bos_token_id}

    def decode(self, ids: torch.Tensor) -> str:
        kept = [i for i in ids.tolist() if i not in self.skip]
        return self.tokenizer.decode(kept, skip_special_tokens=False)

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = [
            stop_index(self.decode(row[self.prompt_length :]), self.thinking) is not None for row in input_ids
        ]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def generate_solutions(
    model: ModelLike,
    prompts: Sequence[str],
    answers: Sequence[int],
    n_samples: int = 1,
    temperature: float | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    thinking_steer: ThinkingSteer | None = None,
    budget: int | None = None,
    share_prefix: bool = True,
    progress: bool = False,
) -> list[list[Generation]]:
    """`n_samples` solutions per prompt (greedy if `temperature` is None), batched and left-padded,
    optionally steered at generated tokens (`vector`, `strength`) or only while thinking
    (`thinking_steer`), or held to a thinking budget of `budget` tokens; returns one list of
    `Generation`s per prompt.

    With `share_prefix`, the instruction and demonstrations every prompt of a batch starts with
    run once (`steerscope.prefix_cache`); the solutions are those of the plain batch. Thinking-time
    steering tracks each row's tokens from the start, so it always runs the plain batch.
    `progress`: a bar over the batches."""
    loaded = as_model(model)
    tokenizer = loaded.tokenizer
    thinking = think_close_id(tokenizer) is not None
    if thinking_steer is not None and vector is not None:
        raise InputError("give either vector (steer every generated token) or thinking_steer, not both")
    close = require_think_close(tokenizer) if budget is not None else None
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n_samples)]
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        if temperature is not None
        else dict(do_sample=False)
    )
    torch.manual_seed(seed)
    results: list[list[Generation]] = [[] for _ in prompts]
    for start in tqdm(range(0, len(flat), batch_size), desc="generating", disable=not progress, leave=False):
        chunk = [p for _, p in flat[start : start + batch_size]]
        steering = (
            steer_thinking(loaded, thinking_steer)
            if thinking_steer is not None
            else _maybe_steer(loaded, vector, strength)
        )
        with torch.no_grad(), steering:
            shared = share_prefix and thinking_steer is None
            prefixed = prefixed_batch(loaded, chunk, max_new_tokens) if shared else None
            if prefixed is None:
                batch = tokenize_for_generate(loaded, chunk)
            else:
                batch = {**prefixed.inputs, "past_key_values": prefixed.cache}
            n_prompt = batch["input_ids"].shape[1]
            stopper = StopAtSolutionEnd(tokenizer, n_prompt, thinking)
            processors = LogitsProcessorList(
                [ThinkingBudget(budget, close, n_prompt)] if close is not None else []
            )
            out = loaded.hf.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                stopping_criteria=StoppingCriteriaList([stopper]),
                logits_processor=processors,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        for (index, _), row in zip(flat[start : start + batch_size], out, strict=True):
            text = truncate_solution(stopper.decode(row[n_prompt:]), thinking)
            n_tokens, n_thinking = count_tokens(tokenizer, text)
            predicted = extract_answer(answer_part(text))
            results[index].append(
                Generation(text, n_tokens, n_thinking, predicted, predicted == answers[index])
            )
    return results


def _maybe_steer(model: ModelLike, vector: SteeringVector | None, strength: float) -> AbstractContextManager:
    if vector is None or strength == 0.0:
        return nullcontext()
    return steer(model, vector, strength=strength, positions="generated")


def pair_by_length(
    generations: Sequence[Generation], by: Literal["n_tokens", "n_thinking"] = "n_tokens"
) -> tuple[Generation, Generation] | None:
    """(shortest, longest) correct solution by token count (`by="n_thinking"`: by thinking
    tokens); None if fewer than two correct ones or all correct ones have the same length."""
    if by not in ("n_tokens", "n_thinking"):
        raise InputError(f"by: unknown {by!r}; valid: 'n_tokens', 'n_thinking'")
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
) -> Harvest:
    """The paper's harvest: sample `n_samples` solutions per problem after the standard `prompt`
    and pair the shortest with the longest correct one."""
    prompts = [prompt(p, "standard") for p in problems]
    samples = generate_solutions(
        model, prompts, [p.answer for p in problems], n_samples, temperature, max_new_tokens, batch_size, seed,
        progress=progress,
    )  # fmt: skip
    pairs = []
    for problem, context, generations in zip(problems, prompts, samples, strict=True):
        found = pair_by_length(generations)
        if found is not None:
            concise, verbose = found
            pairs.append(
                LengthPair(
                    problem,
                    context,
                    _completion(concise.text),
                    _completion(verbose.text),
                    concise.n_tokens,
                    verbose.n_tokens,
                )
            )
    flat = [g for gs in samples for g in gs]
    counts = {
        "n_problems": len(problems),
        "n_samples": len(flat),
        "n_correct": sum(g.correct for g in flat),
        "n_problems_solved": sum(any(g.correct for g in gs) for gs in samples),
        "n_pairs": len(pairs),
        "sample_accuracy": sum(g.correct for g in flat) / max(len(flat), 1),
        **_pair_lengths(pairs),
    }
    return Harvest("sampled", pairs, counts)


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
        answers = [p.answer for p in problems]
        outputs = {
            style: [
                gs[0]
                for gs in generate_solutions(
                    model,
                    [prompt(p, style) for p in problems],
                    answers,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    progress=progress,
                )
            ]
            for style in ("brief", "thorough")
        }
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


def efficiency_vector(
    model: ModelLike,
    harvest: Harvest,
    layers: Sequence[int] | None = None,
    kind: str = "resid_post",
    heldout_fraction: float = 0.25,
    layer: int | None = None,
) -> tuple[SteeringVector, list[dict[str, float]]]:
    """The concise-minus-verbose direction (difference of means over solution tokens) at `layer`,
    or else at the layer whose direction, fitted on the other pairs, best separates held-out pairs
    (a readout criterion; `steering_effects` and `best_layer` choose by the effect of steering).

    Returns the vector (refitted on all pairs at the chosen layer) and the per-layer scores
    (`steering.build.sweep_layers`: held-out sign accuracy and separation in pooled sds). The
    last layer is not chosen automatically (it steers the unembedding rather than the computation).
    """
    loaded = as_model(model)
    pairs = harvest.pairs
    if len(pairs) < 2:
        raise InputError(f"need at least 2 concise/verbose pairs, got {len(pairs)}")
    n_held = min(max(1, math.ceil(heldout_fraction * len(pairs))), len(pairs) - 1)
    train, held = pairs[:-n_held], pairs[-n_held:]
    concise = [(p.prompt, p.concise) for p in pairs]
    verbose = [(p.prompt, p.verbose) for p in pairs]
    scores = sweep_layers(
        loaded,
        ([(p.prompt, p.concise) for p in train], [(p.prompt, p.verbose) for p in train]),
        ([(p.prompt, p.concise) for p in held], [(p.prompt, p.verbose) for p in held]),
        layers=layers,
        kind=kind,
        reduce="completion_mean",
    )
    if layer is None:
        last = loaded.anatomy.n_layers - 1
        candidates = [s for s in scores if s["layer"] != last] or scores
        layer = int(max(candidates, key=lambda s: s["separation"])["layer"])
    vector = diff_of_means(
        loaded,
        concise,
        verbose,
        Site(layer, kind),
        reduce="completion_mean",
        description="efficiency steering: concise minus verbose solutions (arXiv 2506.15647)",
    )
    vector.provenance.update(
        method="efficiency_steering",
        direction="mean(concise) - mean(verbose), residual averaged over solution tokens",
        variant=harvest.variant,
        counts=harvest.counts,
        layer=layer,
        n_pairs=len(pairs),
        n_layer_choice_train=len(train),
        n_layer_choice_heldout=len(held),
        layer_scores=scores,
    )
    return vector, scores


def summarize(generations: Sequence[Generation]) -> dict[str, float | int | None]:
    """Accuracy, mean / median generated tokens, tokens per correct answer (and mean thinking
    tokens for reasoning models)."""
    n = len(generations)
    tokens = [g.n_tokens for g in generations]
    n_correct = sum(g.correct for g in generations)
    summary: dict[str, float | int | None] = {
        "n": n,
        "accuracy": n_correct / n if n else None,
        "mean_tokens": statistics.fmean(tokens) if n else None,
        "median_tokens": statistics.median(tokens) if n else None,
        "tokens_per_correct": sum(tokens) / n_correct if n_correct else None,
    }
    thinking = [g.n_thinking for g in generations if g.n_thinking is not None]
    if thinking:
        summary["mean_thinking_tokens"] = statistics.fmean(thinking)
    return summary


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
    generations = [
        gs[0]
        for gs in generate_solutions(
            model,
            [prompt(p, style) for p in problems],
            [p.answer for p in problems],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            vector=vector,
            strength=strength,
            progress=progress,
        )
    ]
    return summarize(generations), generations


def spread_layers(n_layers: int, k: int) -> list[int]:
    """At most `k` layers spread evenly from the first to the last but one (the last steers the
    unembedding, see `efficiency_vector`)."""
    top = max(n_layers - 2, 0)
    if k >= top + 1:
        return list(range(top + 1))
    if k <= 1:
        return [top // 2]
    return sorted({round(i * top / (k - 1)) for i in range(k)})


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
) -> list[dict[str, Any]]:
    """What each layer's direction does as steering: greedy standard-prompt solutions of the first
    `n_problems` harvested problems, unsteered (row with layer None) and steered at `strength` with
    each layer's concise-minus-verbose direction (fitted on all pairs); one `summarize` row each.

    The layer to steer is chosen by this rather than by held-out separation: a solution's mean
    residual tells concise from verbose solutions by their words alone, already at the token
    embeddings, so the best-separating layer can be one where adding the difference does not make
    the model write less (on `organism:length` it was layer 0, and it lengthened solutions).
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
    )
    length = dict(max_new_tokens=max_new_tokens, batch_size=batch_size, prompt=prompt)
    trials = tqdm(total=len(layers) + 1, desc="layer trial", disable=not progress)
    rows = [{"layer": None, "strength": 0.0, **evaluate(loaded, problems, **length)[0]}]
    trials.update()
    for layer, site in zip(layers, sites, strict=True):
        single = SteeringVector({str(site): fitted.directions[str(site)]}, fitted.fingerprint)
        rows.append(
            {
                "layer": layer,
                "strength": strength,
                **evaluate(loaded, problems, single, strength, **length)[0],
            }
        )
        trials.update()
    trials.close()
    return rows


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


# Reasoning models: thinking-token harvest, thinking-time steering and budgets, with intervals.


def thinking_part(text: str) -> str:
    """The thinking tokens of a solution as `count_tokens` counts them: up to and including
    `</think>` (all of the text when it never closes)."""
    close = text.find(THINK_CLOSE)
    return text if close < 0 else text[: close + len(THINK_CLOSE)]


def harvest_thinking(
    model: ModelLike,
    problems: Sequence[Problem],
    n_samples: int = 8,
    temperature: float = 1.0,
    max_new_tokens: int = 160,
    batch_size: int = 32,
    seed: int = 0,
    prompt: PromptFn = few_shot_prompt,
    progress: bool = False,
) -> tuple[Harvest, list[list[Generation]]]:
    """The paper's harvest on a reasoning model: `n_samples` traces per problem after the standard
    `prompt`, pairing the correct traces with the fewest and the most thinking tokens. A pair's
    completions are its thinking only, so `thinking_directions` averages over thinking tokens.
    Returns the harvest and every sample (SEAL-style calibration reads the same traces)."""
    require_think_close(as_model(model).tokenizer)
    prompts = [prompt(p, "standard") for p in problems]
    samples = generate_solutions(
        model, prompts, [p.answer for p in problems], n_samples, temperature, max_new_tokens, batch_size, seed,
        progress=progress,
    )  # fmt: skip
    pairs = []
    for problem, context, generations in zip(problems, prompts, samples, strict=True):
        found = pair_by_length(generations, by="n_thinking")
        if found is not None:
            concise, verbose = found
            pairs.append(
                LengthPair(
                    problem,
                    context,
                    thinking_part(concise.text),
                    thinking_part(verbose.text),
                    concise.n_thinking or 0,
                    verbose.n_thinking or 0,
                )
            )
    flat = [g for gs in samples for g in gs]
    counts = {
        "n_problems": len(problems),
        "n_samples": len(flat),
        "n_correct": sum(g.correct for g in flat),
        "n_pairs": len(pairs),
        "sample_accuracy": sum(g.correct for g in flat) / max(len(flat), 1),
        "mean_thinking_tokens": statistics.fmean(g.n_thinking or 0 for g in flat) if flat else None,
        **_pair_lengths(pairs),
    }
    return Harvest("thinking", pairs, counts), samples


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


def _resamples(n_problems: int, n_boot: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n_problems, (n_boot, n_problems), generator=generator)


def _interval(values: torch.Tensor, level: float) -> list[float]:
    tail = (1 - level) / 2
    return [values.quantile(tail).item(), values.quantile(1 - tail).item()]


def problem_intervals(
    samples: Sequence[Sequence[Generation]], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, list[float]]:
    """Bootstrap intervals of accuracy and mean thinking tokens (all tokens for a model without
    `</think>`), resampling problems (several samples of one problem are not independent)."""
    if not samples or any(not gs for gs in samples):
        raise InputError("need at least one generation for every problem")
    correct, tokens, n = _per_problem(samples)
    picks = _resamples(len(samples), n_boot, seed)
    total = n[picks].sum(1)
    return {
        "accuracy_ci": _interval(correct[picks].sum(1) / total, level),
        "mean_thinking_ci": _interval(tokens[picks].sum(1) / total, level),
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
    picks = _resamples(len(base), n_boot, seed)

    def accuracy_gap(idx: torch.Tensor) -> torch.Tensor:
        return c1[idx].sum(-1) / n1[idx].sum(-1) - c0[idx].sum(-1) / n0[idx].sum(-1)

    def thinking_change(idx: torch.Tensor) -> torch.Tensor:
        return (t1[idx].sum(-1) / n1[idx].sum(-1)) / (t0[idx].sum(-1) / n0[idx].sum(-1)) - 1

    every = torch.arange(len(base))
    return {
        "accuracy_change": accuracy_gap(every).item(),
        "accuracy_change_ci": _interval(accuracy_gap(picks), level),
        "thinking_change": thinking_change(every).item(),
        "thinking_change_ci": _interval(thinking_change(picks), level),
    }


def pick_steering(rows: Sequence[dict[str, Any]], tolerance: float = 0.02) -> int | None:
    """Index (into the steered rows, `rows[1:]`) of the fewest mean thinking tokens among rows
    that think less than the unsteered `rows[0]` at an accuracy at most `tolerance` below its;
    None if none does."""
    base, base_tokens = rows[0]["accuracy"] or 0.0, rows[0]["mean_thinking_tokens"]
    allowed = [
        i
        for i, row in enumerate(rows[1:])
        if (row["accuracy"] or 0.0) >= base - tolerance and row["mean_thinking_tokens"] < base_tokens
    ]
    if not allowed:
        return None
    return min(allowed, key=lambda i: rows[i + 1]["mean_thinking_tokens"])
