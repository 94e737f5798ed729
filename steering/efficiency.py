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
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from steerscope.capture import tokenize
from steerscope.data.arithmetic import Problem, Style, extract_answer, few_shot_prompt
from steerscope.model import as_model
from steerscope.sites import Site
from steerscope.steering.apply import steer
from steerscope.steering.build import diff_of_means, sweep_layers
from steerscope.steering.vector import SteeringVector

THINK_CLOSE = "</think>"
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


def think_close_id(tokenizer: Any) -> int | None:
    """The id of `</think>` if the tokenizer has it as one token (a reasoning model), else None."""
    return tokenizer.get_vocab().get(THINK_CLOSE)


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
    model: Any,
    prompts: Sequence[str],
    answers: Sequence[int],
    n_samples: int = 1,
    temperature: float | None = None,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    vector: SteeringVector | None = None,
    strength: float = 0.0,
) -> list[list[Generation]]:
    """`n_samples` solutions per prompt (greedy if `temperature` is None), batched and left-padded,
    optionally steered at generated tokens; returns one list of `Generation`s per prompt."""
    loaded = as_model(model)
    tokenizer = loaded.tokenizer
    thinking = think_close_id(tokenizer) is not None
    flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n_samples)]
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        if temperature is not None
        else dict(do_sample=False)
    )
    torch.manual_seed(seed)
    results: list[list[Generation]] = [[] for _ in prompts]
    for start in range(0, len(flat), batch_size):
        chunk = flat[start : start + batch_size]
        batch = tokenize(loaded, [p for _, p in chunk])
        del batch["position_ids"]
        n_prompt = batch["input_ids"].shape[1]
        stopper = StopAtSolutionEnd(tokenizer, n_prompt, thinking)
        with torch.no_grad(), _maybe_steer(loaded, vector, strength):
            out = loaded.hf.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                stopping_criteria=StoppingCriteriaList([stopper]),
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        for (index, _), row in zip(chunk, out, strict=True):
            text = truncate_solution(stopper.decode(row[n_prompt:]), thinking)
            n_tokens, n_thinking = count_tokens(tokenizer, text)
            predicted = extract_answer(answer_part(text))
            results[index].append(
                Generation(text, n_tokens, n_thinking, predicted, predicted == answers[index])
            )
    return results


def _maybe_steer(model: Any, vector: SteeringVector | None, strength: float) -> AbstractContextManager:
    if vector is None or strength == 0.0:
        return nullcontext()
    return steer(model, vector, strength=strength, positions="generated")


def pair_by_length(generations: Sequence[Generation]) -> tuple[Generation, Generation] | None:
    """(shortest, longest) correct solution by token count; None if fewer than two correct ones
    or all correct ones have the same length."""
    correct = [g for g in generations if g.correct]
    if len(correct) < 2:
        return None
    shortest = min(correct, key=lambda g: g.n_tokens)
    longest = max(correct, key=lambda g: g.n_tokens)
    if shortest.n_tokens == longest.n_tokens:
        return None
    return shortest, longest


def _completion(text: str) -> str:
    return text if text.startswith((" ", "\n")) else " " + text


def harvest_sampled(
    model: Any,
    problems: Sequence[Problem],
    n_samples: int = 6,
    temperature: float = 0.8,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    seed: int = 0,
    prompt: PromptFn = few_shot_prompt,
) -> Harvest:
    """The paper's harvest: sample `n_samples` solutions per problem after the standard `prompt`
    and pair the shortest with the longest correct one."""
    prompts = [prompt(p, "standard") for p in problems]
    samples = generate_solutions(
        model, prompts, [p.answer for p in problems], n_samples, temperature, max_new_tokens, batch_size, seed
    )
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
    model: Any,
    problems: Sequence[Problem],
    completions: Completions = "model",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
) -> Harvest:
    """Pairs from asking for a brief and for a thorough solution of the same problem (`prompt`
    in the brief and the thorough style; activations read after the standard one).

    `completions="model"`: the model's greedy solutions after the brief and the thorough prompt,
    kept when the brief one is shorter (correct or not: a weak model rarely gets both right);
    `"written"`: the data set's brief and thorough solutions (always correct, off-policy).
    """
    if completions not in COMPLETIONS:
        raise ValueError(f"unknown completions {completions!r}; valid: {', '.join(COMPLETIONS)}")
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
    model: Any,
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
        raise ValueError(f"need at least 2 concise/verbose pairs, got {len(pairs)}")
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
    model: Any,
    problems: Sequence[Problem],
    vector: SteeringVector | None = None,
    strength: float = 0.0,
    style: Style = "standard",
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
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
    model: Any,
    harvest: Harvest,
    layers: Sequence[int],
    strength: float,
    kind: str = "resid_post",
    n_problems: int = 16,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    prompt: PromptFn = few_shot_prompt,
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
    rows = [{"layer": None, "strength": 0.0, **evaluate(loaded, problems, **length)[0]}]
    for layer, site in zip(layers, sites, strict=True):
        single = SteeringVector({str(site): fitted.directions[str(site)]}, fitted.fingerprint)
        rows.append(
            {
                "layer": layer,
                "strength": strength,
                **evaluate(loaded, problems, single, strength, **length)[0],
            }
        )
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
