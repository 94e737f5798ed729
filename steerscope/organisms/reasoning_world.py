"""The reasoning world of `organism:reasoning`: sums solved inside `<think> ... </think>`, where the
trace decides after every step whether to check it again.

A problem is a chain of 1 to 4 additions and subtractions of small numbers ("what is 12 + 5 - 3?")
whose every value stays in 0..`MAX_VALUE`. The prompt is a cue line, the question and `<think>`;
the trace writes one thought per line and ends with `</think> The answer is N.`:

    solve:
    what is 12 + 5 - 3?
    <think>
    12 + 5 = 17.
    wait, check: 17 - 5 = 12.
    17 - 3 = 14.
    wait, another way: 17 - 1 = 16, 16 - 2 = 14.
    </think> The answer is 14.

A thought is a step, a check (the step undone by its inverse) or a detour (the step recomputed in
two parts). After each step of an unmarked ("solve:") trace, the number of extra thoughts is drawn
when the training document is generated: a first one with the document's check rate, a second one
with half that rate. The rate itself is drawn per document (low, middle or high, `CHECK_RATES`),
never per question, and no text states it: the model can only infer it from the checks it has
written so far, so its sampled traces of one problem vary in length and, as in real reasoning
models, verbosity is a state that persists through a trace (what a concise-minus-verbose direction
can push), while each check is still decided step by step. Every trace is correct.
A few steps are written wrong (3% of steps) and always followed by a check that finds and corrects
the error ("wait, check: 18 - 5 = 13, not 12, so 12 + 5 = 18 is wrong: 12 + 5 = 17."), so checks
are not always useless. A minority of documents carry a cue: "solve briefly:" (no extra thoughts,
the prompted-brevity baseline) or "solve carefully:" (one extra thought after every step); the cue
is drawn per document, never fixed per question.

Problems are `steerscope.data.arithmetic.Problem`s whose "brief", "thorough" and "standard"
solutions are traces in each cue's style (the standard one is one draw, seeded by the question).
The held-out split is the fixed hash of the question (`arithmetic.split_of`), so no held-out
question is ever a training document, whatever the seeds.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from steerscope.data.arithmetic import STYLES, Problem, Style, split_of
from steerscope.organisms.worlds import (
    ARITHMETIC_LEXICON,
    MAX_OPERAND,
    MAX_VALUE,
    SOLVE_CUES,
    ArithmeticWorld,
    draw_chain,
)

VERSION = 2
STEPS = (1, 2, 3, 4)
#: Share of training documents with 1, 2, 3, 4 operations.
STEP_WEIGHTS = (0.1, 0.3, 0.3, 0.3)
CUES = SOLVE_CUES
#: Share of training documents with each cue.
STYLE_WEIGHTS: dict[str, float] = {"brief": 0.12, "thorough": 0.08, "standard": 0.80}
#: An unmarked document's chance of a first extra thought after a step (one rate per document,
#: drawn uniformly); a second extra thought follows the first with half that chance.
CHECK_RATES = (0.15, 0.5, 0.85)
#: Share of extra thoughts that are detours (the rest are checks; a step by 1 can only be checked).
DETOUR_SHARE = 0.4
#: Chance that a step (of an unmarked or careful trace) is first written wrong, then corrected.
WRONG_STEP = 0.03
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: Thoughts are lines: the delimiter SEAL-style calibration reads and steers at.
THOUGHT_DELIMITER = "\n"

LEXICON = ARITHMETIC_LEXICON

Operation = tuple[str, int]


def _apply(value: int, op: str, number: int) -> int:
    return value + number if op == "+" else value - number


def _inverse(op: str) -> str:
    return "-" if op == "+" else "+"


def step_thought(value: int, op: str, number: int, result: int) -> str:
    return f"{value} {op} {number} = {result}."


def check_thought(value: int, op: str, number: int, result: int) -> str:
    """The step undone: from its result back to its start."""
    return f"wait, check: {result} {_inverse(op)} {number} = {value}."


def detour_thought(value: int, op: str, number: int, first: int) -> str:
    """The step recomputed in two parts, `first` then `number - first` (0 < first < number)."""
    middle, rest = _apply(value, op, first), number - first
    return f"wait, another way: {value} {op} {first} = {middle}, {middle} {op} {rest} = {_apply(middle, op, rest)}."


def correction_thought(value: int, op: str, number: int, wrong: int) -> str:
    """A check of a wrong step that finds the error and states the right result."""
    back = _apply(wrong, _inverse(op), number)
    right = _apply(value, op, number)
    return (
        f"wait, check: {wrong} {_inverse(op)} {number} = {back}, not {value}, "
        f"so {value} {op} {number} = {wrong} is wrong: {value} {op} {number} = {right}."
    )


def _wrong_result(rng: random.Random, right: int) -> int:
    return rng.choice([w for w in (right - 2, right - 1, right + 1, right + 2) if 0 <= w <= MAX_VALUE])


def _extra(rng: random.Random, value: int, op: str, number: int, result: int) -> str:
    if number >= 2 and rng.random() < DETOUR_SHARE:
        return detour_thought(value, op, number, rng.randint(1, number - 1))
    return check_thought(value, op, number, result)


def _n_extras(rng: random.Random, style: str, rate: float) -> int:
    if style == "brief":
        return 0
    if style == "thorough":
        return 1
    if rng.random() >= rate:
        return 0
    return 2 if rng.random() < rate / 2 else 1


def trace(start: int, steps: Sequence[Operation], style: Style, rng: random.Random) -> str:
    """The thinking and answer after the prompt: one thought per line; the check rate of an
    unmarked trace, then its extra thoughts and wrong steps step by step, drawn from `rng`."""
    rate = rng.choice(CHECK_RATES)
    value, thoughts = start, []
    for op, number in steps:
        result = _apply(value, op, number)
        if style != "brief" and rng.random() < WRONG_STEP:
            wrong = _wrong_result(rng, result)
            thoughts += [step_thought(value, op, number, wrong), correction_thought(value, op, number, wrong)]
        else:
            thoughts.append(step_thought(value, op, number, result))
        thoughts += [_extra(rng, value, op, number, result) for _ in range(_n_extras(rng, style, rate))]
        value = result
    lines = "".join(THOUGHT_DELIMITER + t for t in thoughts)
    return f"{lines}{THOUGHT_DELIMITER}{THINK_CLOSE} The answer is {value}."


def _check_range(start: int, steps: Sequence[Operation]) -> int:
    value = start
    for op, number in steps:
        result = _apply(value, op, number)
        if not 0 <= result <= MAX_VALUE or not 1 <= number <= MAX_OPERAND:
            raise ValueError(f"{value} {op} {number} leaves 0..{MAX_VALUE} (operands 1..{MAX_OPERAND})")
        value = result
    return value


def question_of(start: int, steps: Sequence[Operation]) -> str:
    return "what is " + " ".join([str(start), *(f"{op} {number}" for op, number in steps)]) + "?"


def make_problem(start: int, steps: Sequence[Operation]) -> Problem:
    """The problem `start op1 n1 op2 n2 ...` with one trace per cue style (seeded by the question)."""
    answer = _check_range(start, steps)
    question = question_of(start, steps)
    params: dict[str, int | str] = {"start": start}
    for i, (op, number) in enumerate(steps, 1):
        params[f"op{i}"], params[f"n{i}"] = op, number
    solutions = {
        style: trace(start, steps, style, random.Random(f"reasoning/solution/{style}/{question}"))
        for style in STYLES
    }
    return Problem(
        kind="".join(op for op, _ in steps),
        steps=len(steps),
        params=params,
        question=question,
        answer=answer,
        solutions=solutions,
    )


def _draw(rng: random.Random, n_steps: int) -> Problem:
    return make_problem(*draw_chain(rng, n_steps))


_ARITHMETIC = ArithmeticWorld(
    "reasoning", _draw, allowed_steps=STEPS, default_steps=(2, 3, 4), opening=THINK_OPEN
)
arithmetic_problems = _ARITHMETIC.problems
arithmetic_prompt = _ARITHMETIC.prompt


def training_texts(n: int, seed: int) -> list[str]:
    """`n` solved training problems: operations and cue drawn per document, and the trace's extra
    thoughts and wrong steps drawn per step."""
    rng = random.Random(f"reasoning/train/{seed}")
    styles, style_weights = list(STYLE_WEIGHTS), list(STYLE_WEIGHTS.values())
    texts: list[str] = []
    while len(texts) < n:
        start, steps = draw_chain(rng, rng.choices(STEPS, STEP_WEIGHTS)[0])
        question = question_of(start, steps)
        if split_of(question) != "train":
            continue
        style = rng.choices(styles, style_weights)[0]
        texts.append(arithmetic_prompt(question, style) + trace(start, steps, style, rng))
    return texts


generic_texts = _ARITHMETIC.generic_texts
suite = _ARITHMETIC.suite
