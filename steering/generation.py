"""Solving problems by generation, and reading the solutions (what the efficiency experiment
measures: length, thinking length, the stated answer).

A solution ends at the model's end-of-sequence token or at the stop rule (a blank line or a next
"Question:"). Reasoning models: when the tokenizer has a single `</think>` token, tokens up to and
including it are counted as thinking tokens, and the stop rule applies only after it. Prompts
come from a `prompt(problem, style)` function: the few-shot prompts of
`steerscope.data.arithmetic` by default, a model organism's cue prompts from its data suite.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from steerscope.capture import tokenize_for_generate
from steerscope.data.arithmetic import Problem, Style, extract_answer, few_shot_prompt
from steerscope.errors import InputError
from steerscope.model import Model, ModelLike, as_model
from steerscope.prefix_cache import prefixed_batch
from steerscope.steering.apply import steer
from steerscope.steering.thinking import (
    THINK_CLOSE,
    ThinkingBudget,
    ThinkingSteer,
    require_think_close,
    steer_thinking,
    think_close_id,
)
from steerscope.steering.vector import SteeringVector

STOP_MARKERS = ("\n\n", "Question:")
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


def thinking_part(text: str) -> str:
    """The thinking tokens of a solution as `count_tokens` counts them: up to and including
    `</think>` (all of the text when it never closes)."""
    close = text.find(THINK_CLOSE)
    return text if close < 0 else text[: close + len(THINK_CLOSE)]


@dataclass(frozen=True)
class Setting:
    """How `solve_in_settings` asks: the prompt style, and a vector added at generated tokens at a
    relative strength (None or strength 0: unsteered)."""

    vector: SteeringVector | None = None
    strength: float = 0.0
    style: Style = "standard"


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


class _Ticks(StoppingCriteria):
    """Stops nothing; moves a progress bar one step per decoding step."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        self.bar.update()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


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
        rows = flat[start : start + batch_size]
        steering = (
            steer_thinking(loaded, thinking_steer)
            if thinking_steer is not None
            else _steer_rows(loaded, [(vector, strength)])
        )
        texts = _solve_batch(
            loaded,
            [p for _, p in rows],
            steering,
            max_new_tokens,
            sampling,
            share_prefix and thinking_steer is None,
            (budget, close) if close is not None else None,
        )
        for (index, _), text in zip(rows, texts, strict=True):
            results[index].append(read_solution(tokenizer, text, answers[index]))
    return results


def solve_in_settings(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    prompt: PromptFn = few_shot_prompt,
    max_new_tokens: int = 96,
    batch_size: int = 16,
    progress: bool = False,
) -> list[list[Generation]]:
    """Greedy solutions of `problems` in each setting (a prompt style, and a vector added at
    generated tokens at a relative strength); one list per setting, one `Generation` per problem.

    The problems are batched by `batch_size` as `generate_solutions` batches prompts, and every
    setting of a batch runs in the same `generate` call (batch x settings rows, each row steered by
    its own setting, `steer(..., per_row=True)`; each style's prompts share their own prefix,
    `prefixed_batch` with groups): a decoding step's fixed cost (reading the weights, the Python
    around the forward) is paid once for all settings, and each row's solution is the one its
    setting gives alone. `progress`: a bar over the decoding steps."""
    loaded = as_model(model)
    if not settings:
        raise InputError("settings: give at least one")
    prompts = {
        style: [prompt(p, style) for p in problems] for style in dict.fromkeys(s.style for s in settings)
    }
    results: list[list[Generation]] = [[] for _ in settings]
    starts = range(0, len(problems), batch_size)
    bar = tqdm(
        total=len(starts) * max_new_tokens, desc="generating", unit="step", disable=not progress, leave=False
    )
    for call, start in enumerate(starts):
        chunk = range(start, min(start + batch_size, len(problems)))
        rows = [(k, i) for k in range(len(settings)) for i in chunk]
        texts = _solve_batch(
            loaded,
            [prompts[settings[k].style][i] for k, i in rows],
            _steer_rows(loaded, [(settings[k].vector, settings[k].strength) for k, _ in rows]),
            max_new_tokens,
            dict(do_sample=False),
            groups=[settings[k].style for k, _ in rows],
            bar=bar,
        )
        bar.update((call + 1) * max_new_tokens - bar.n)  # a call that stopped early: its steps left
        for (k, i), text in zip(rows, texts, strict=True):
            results[k].append(read_solution(loaded.tokenizer, text, problems[i].answer))
    bar.close()
    return results


def read_solution(tokenizer: Any, text: str, answer: int) -> Generation:
    """A truncated solution's token counts, stated answer and correctness."""
    n_tokens, n_thinking = count_tokens(tokenizer, text)
    predicted = extract_answer(answer_part(text))
    return Generation(text, n_tokens, n_thinking, predicted, predicted == answer)


def _solve_batch(
    model: Model,
    prompts: list[str],
    steering: AbstractContextManager,
    max_new_tokens: int,
    sampling: dict[str, Any],
    share_prefix: bool = True,
    budget: tuple[int, int] | None = None,
    groups: Sequence[Hashable] | None = None,
    bar: Any = None,
) -> list[str]:
    """One `generate` call on `prompts` inside `steering`, stopped at each row's solution end
    (`budget`: thinking budget and `</think>` id; `groups`: a label per prompt, rows sharing a
    prefix; `bar`: a tqdm bar moved one per decoding step); the truncated solutions.

    With `share_prefix`, `steering` must leave the prompt alone (it acts at generated tokens): the
    shared prefix, all prompt, runs before the block, where a per-row edit would not fit its single
    row; the continuing call still counts the rest of each prompt as prompt (`PromptPrefixCache`)."""
    tokenizer = model.tokenizer
    thinking = think_close_id(tokenizer) is not None
    with torch.no_grad():
        prefixed = prefixed_batch(model, prompts, max_new_tokens, groups=groups) if share_prefix else None
    if prefixed is None:
        batch = tokenize_for_generate(model, prompts)
    else:
        batch = {**prefixed.inputs, "past_key_values": prefixed.cache}
    with torch.no_grad(), steering:
        n_prompt = batch["input_ids"].shape[1]
        stopper = StopAtSolutionEnd(tokenizer, n_prompt, thinking)
        processors = LogitsProcessorList([ThinkingBudget(*budget, n_prompt)] if budget is not None else [])
        out = model.hf.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            stopping_criteria=StoppingCriteriaList([stopper] if bar is None else [stopper, _Ticks(bar)]),
            logits_processor=processors,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return [truncate_solution(stopper.decode(row[n_prompt:]), thinking) for row in out]


def _steer_rows(model: Model, rows: Sequence[tuple[SteeringVector | None, float]]) -> AbstractContextManager:
    """Each batch row steered at generated tokens by its own (vector, strength), or every row by
    the one given; unsteered rows add nothing (strength 0 in the per-row block), and a block with
    no steered row installs nothing."""
    steered = next((vector for vector, strength in rows if vector is not None and strength != 0.0), None)
    if steered is None:
        return nullcontext()
    vectors = [steered if vector is None else vector for vector, _ in rows]
    strengths = [0.0 if vector is None else strength for vector, strength in rows]
    return steer(model, vectors, strength=strengths, positions="generated", per_row=True)


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
