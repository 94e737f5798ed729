"""What the organism worlds share: a suite named after its world with held-out filler as its text,
and for the two arithmetic worlds (length, reasoning) the cue prompt and the problem draw."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steerscope.data.arithmetic import SPLITS, STYLES, Problem, Split, Style, distinct_problems
from steerscope.data.suite import DataSuite, ProblemData, TextData
from steerscope.errors import InputError
from steerscope.organisms.filler import filler_texts

#: The arithmetic worlds' filler words (every lexicon needs people, things and places).
ARITHMETIC_LEXICON = {
    "people": ("Tom", "Sara", "Ben", "Mia", "Leo", "Ana", "Nora", "Sam"),
    "things": ("apple", "pencil", "sticker", "marble", "cookie", "card", "coin", "shell"),
    "places": ("school", "market", "garden", "library", "shop", "park"),
}
#: Sentences per arithmetic world's generic paragraph: long enough to cut several 64-token windows.
_ARITHMETIC_SENTENCES = 32
#: The arithmetic worlds' range: every value in 0..MAX_VALUE, every operand in 1..MAX_OPERAND.
MAX_OPERAND, MAX_VALUE = 10, 20
#: The arithmetic worlds' cue lines, one per solution style.
SOLVE_CUES: dict[str, str] = {"brief": "solve briefly:", "thorough": "solve carefully:", "standard": "solve:"}


def held_out_filler(
    lexicon: Mapping[str, Sequence[str]], paragraphs: int, sentences: int = 5
) -> Callable[[], list[str]]:
    """A world's generic text: `paragraphs` filler paragraphs of the "eval" seed, which the
    trainer's filler never uses."""
    return functools.partial(filler_texts, lexicon, paragraphs, "eval", sentences=sentences)


def organism_suite(
    world: str, text: Callable[[], list[str]], window: int, **kinds: Callable[[str], Any]
) -> DataSuite:
    """The `DataSuite` of `organism:<world>`: `text` in windows of `window` tokens, and each other
    kind built from the world's source name (`kinds`: DataSuite field -> source -> provider)."""
    source = f"steerscope:organism:{world}"
    made = {kind: make(source) for kind, make in kinds.items()}
    return DataSuite(name=f"organism:{world}", text=TextData(text, window, source), **made)


def draw_chain(rng: random.Random, n_steps: int) -> tuple[int, list[tuple[str, int]]]:
    """A random start and chain of `n_steps` operations; each is + or - (whichever keep the value
    in 0..`MAX_VALUE`), with an operand of 1..`MAX_OPERAND`."""
    value = rng.randint(1, MAX_VALUE)
    start, steps = value, []
    for _ in range(n_steps):
        room = {"+": min(MAX_OPERAND, MAX_VALUE - value), "-": min(MAX_OPERAND, value)}
        op = rng.choice([o for o, r in room.items() if r >= 1])
        number = rng.randint(1, room[op])
        steps.append((op, number))
        value = value + number if op == "+" else value - number
    return start, steps


@dataclass(frozen=True)
class ArithmeticWorld:
    """The problems and prompts of an arithmetic world: problems of 1 to `max(allowed_steps)`
    operations drawn by `draw` (seeded by the world's name), each asked as its style's cue line and
    the question, then `opening` (where the solution starts)."""

    name: str
    draw: Callable[[random.Random, int], Problem]
    allowed_steps: tuple[int, ...]
    default_steps: tuple[int, ...]
    opening: str = ""

    def problems(
        self, n: int, split: Split = "train", seed: int = 0, steps: Sequence[int] | None = None
    ) -> list[Problem]:
        """`n` distinct problems of `split`, cycling through the numbers of operations in `steps`."""
        steps = self.default_steps if steps is None else steps
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        if not steps or any(s not in self.allowed_steps for s in steps):
            raise InputError(f"steps must be among {list(self.allowed_steps)}; got {list(steps)}")
        return distinct_problems(self.draw, random.Random(f"{self.name}/problems/{seed}"), n, split, steps)

    def prompt(self, problem: Problem | str, style: Style = "standard") -> str:
        """The style's cue line, the question, then the world's opening."""
        if style not in STYLES:
            raise InputError(f"unknown style {style!r}; valid: {', '.join(STYLES)}")
        question = problem.question if isinstance(problem, Problem) else problem
        return f"{SOLVE_CUES[style]}\n{question}\n{self.opening}"

    def generic_texts(self) -> list[str]:
        """Held-out filler paragraphs (about 210 windows of 64 tokens per split)."""
        return filler_texts(ARITHMETIC_LEXICON, 140, "eval", sentences=_ARITHMETIC_SENTENCES)

    def suite(self) -> DataSuite:
        """The world's data suite: its problems and cue prompts, generic filler text."""
        problems = functools.partial(ProblemData, self.problems, self.prompt)
        return organism_suite(self.name, self.generic_texts, 128, problems=problems)
