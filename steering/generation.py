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
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from steerscope.capture import tokenize_for_generate
from steerscope.data.arithmetic import Problem, Style, extract_answer
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
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
