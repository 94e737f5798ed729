"""The solution-length world of `organism:length`: step-by-step sums solved concisely or verbosely.

A problem is a chain of 1 to 3 additions and subtractions of small numbers ("what is 12 + 5 - 3?")
whose every value stays in 0..`MAX_VALUE`. It has two written solutions with the same steps and the
same answer: the concise one states each step ("12 + 5 = 17."), the verbose one re-checks every step
by its inverse ("check: 17 - 5 = 12."). A cue line asks for a style: "solve briefly:" (concise),
"solve carefully:" (verbose) or plain "solve:", after which half the problems (by a fixed hash) were
solved concisely and half verbosely, so the unmarked prompt gives a real mix of lengths and
efficiency steering has a concise/verbose axis to find.

Problems are `steerscope.data.arithmetic.Problem`s; their "brief" and "thorough" solutions are the
concise and verbose ones and "standard" is the one the unmarked prompt was trained on. The held-out
split is the natural set's fixed hash of the question (`arithmetic.split_of`), so no held-out
question is ever a training document, whatever the seeds; its steps are sums seen in training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from steerscope.data.arithmetic import STYLES, Problem, split_of
from steerscope.organisms.worlds import (
    ARITHMETIC_LEXICON,
    MAX_VALUE,
    SOLVE_CUES,
    ArithmeticWorld,
    draw_chain,
)

VERSION = 1
CUES = SOLVE_CUES

LEXICON = ARITHMETIC_LEXICON


def _inverse(op: str) -> str:
    return "-" if op == "+" else "+"


def make_problem(start: int, steps: Sequence[tuple[str, int]]) -> Problem:
    """The problem `start op1 n1 op2 n2 ...` with its concise, verbose and standard solutions."""
    value, concise, verbose = start, [], []
    for op, number in steps:
        result = value + number if op == "+" else value - number
        if not 0 <= result <= MAX_VALUE:
            raise ValueError(f"{value} {op} {number} leaves 0..{MAX_VALUE}")
        step = f"{value} {op} {number} = {result}."
        concise.append(step)
        verbose += [step, f"check: {result} {_inverse(op)} {number} = {value}."]
        value = result
    expression = " ".join([str(start), *(f"{op} {number}" for op, number in steps)])
    question = f"what is {expression}?"
    end = f"The answer is {value}."
    brief, thorough = " ".join([*concise, end]), " ".join([*verbose, end])
    params: dict[str, int | str] = {"start": start}
    for i, (op, number) in enumerate(steps, 1):
        params[f"op{i}"], params[f"n{i}"] = op, number
    return Problem(
        kind="".join(op for op, _ in steps),
        steps=len(steps),
        params=params,
        question=question,
        answer=value,
        solutions={
            "brief": brief,
            "thorough": thorough,
            "standard": thorough if _verbose(question) else brief,
        },
    )


def _verbose(question: str) -> bool:
    """Whether the unmarked prompt's solution of `question` is the verbose one (half of them)."""
    return hashlib.sha256(f"length-style/{question}".encode()).digest()[0] % 2 == 1


def _draw(rng: random.Random, n_steps: int) -> Problem:
    return make_problem(*draw_chain(rng, n_steps))


_ARITHMETIC = ArithmeticWorld("length", _draw, allowed_steps=(1, 2, 3), default_steps=(1, 2, 3))
arithmetic_problems = _ARITHMETIC.problems
arithmetic_prompt = _ARITHMETIC.prompt


def training_texts(n: int, seed: int) -> list[str]:
    """`n` solved training problems (1 to 3 operations, each cue a third of the time)."""
    rng = random.Random(f"length/train/{seed}")
    texts: list[str] = []
    while len(texts) < n:
        problem = _draw(rng, rng.randint(1, 3))
        if split_of(problem.question) != "train":
            continue
        style = rng.choice(STYLES)
        texts.append(f"{arithmetic_prompt(problem, style)} {problem.solution(style)}")
    return texts


generic_texts = _ARITHMETIC.generic_texts
suite = _ARITHMETIC.suite
