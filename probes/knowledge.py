"""Knowledge-selection behaviour: does a model answer from the context or from memory?

Follows the SpARE setup (Zhao et al. 2025, arXiv 2410.15999; probing companion arXiv 2410.16090)
on `steerscope.data.facts`: keep the facts a model answers right closed-book ("memorised"), give
it a context that swaps the answer for a same-type substitute, and label its greedy answer
"C" (follows the context: says the substitute) or "M" (follows memory: says the original).
Anything else is dropped. The paper elicits both behaviours with the demonstrations alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerscope.data.facts import (
    DEMO_KINDS,
    FACTS,
    Fact,
    closed_book_prompt,
    context_prompt,
    demo_facts,
    demonstrations,
    starts_with_answer,
    substitute,
)
from steerscope.probes.lm_metrics import greedy_continuations

Behaviour = Literal["C", "M"]


@torch.no_grad()
def answer_greedy(
    model: Any, prompts: Sequence[str], max_new_tokens: int = 4, batch_size: int = 16
) -> list[str]:
    """The first line of each prompt's greedy continuation (left-padded batches)."""
    texts = greedy_continuations(model, prompts, max_new_tokens, batch_size)
    return [text.split("\n", 1)[0].strip() for text in texts]


def memorised_facts(
    model: Any,
    facts: Sequence[Fact],
    demos: int = 3,
    seed: int = 0,
    pool: Sequence[Fact] = FACTS,
    batch_size: int = 16,
) -> list[Fact]:
    """The facts the model answers right closed-book, after `demos` demonstrations from `pool`.

    Right means the normalised greedy answer starts with the normalised answer word
    (whole words: "paris france" counts for Paris, "parisian" does not).
    """
    prompts = [closed_book_prompt(f, demo_facts(f, demos, seed, pool)) for f in facts]
    outputs = answer_greedy(model, prompts, batch_size=batch_size)
    return [f for f, out in zip(facts, outputs, strict=True) if starts_with_answer(out, f.answer)]


def label_behaviour(output: str, original: str, substitute: str) -> Behaviour | None:
    """ "C" if the output starts with the substitute, "M" if with the original, else None."""
    if starts_with_answer(output, substitute):
        return "C"
    if starts_with_answer(output, original):
        return "M"
    return None


@dataclass(frozen=True)
class LabelledExample:
    """One conflicting prompt, the model's answer and its label (None: dropped)."""

    prompt: str
    output: str
    label: Behaviour | None
    fact: Fact
    substitute: str
    demo_kind: str


@dataclass(frozen=True)
class BehaviourCounts:
    """`counts[kind]` = {"C": ..., "M": ..., "dropped": ...}; `examples` holds every prompt."""

    counts: dict[str, dict[str, int]]
    examples: list[LabelledExample]

    @property
    def labelled(self) -> list[LabelledExample]:
        """The examples labelled C or M (the ones the paper keeps)."""
        return [e for e in self.examples if e.label is not None]


def behaviour_counts(
    model: Any,
    facts: Sequence[Fact],
    kinds: Sequence[str] = DEMO_KINDS,
    demos: int = 3,
    seed: int = 0,
    pool: Sequence[Fact] = FACTS,
    batch_size: int = 16,
    max_new_tokens: int = 4,
) -> BehaviourCounts:
    """Conflicting prompts for every fact under each demonstration kind, answered and labelled."""
    examples = []
    for kind in kinds:
        cases = [(f, substitute(f, seed, pool)) for f in facts]
        prompts = [
            context_prompt(f, demonstrations(f, kind, demos, seed, pool), conflict=True, substitute=s)
            for f, s in cases
        ]
        outputs = answer_greedy(model, prompts, max_new_tokens, batch_size)
        examples += [
            LabelledExample(p, out, label_behaviour(out, f.answer, s), f, s, kind)
            for p, out, (f, s) in zip(prompts, outputs, cases, strict=True)
        ]
    counts = {
        kind: {
            "C": sum(e.demo_kind == kind and e.label == "C" for e in examples),
            "M": sum(e.demo_kind == kind and e.label == "M" for e in examples),
            "dropped": sum(e.demo_kind == kind and e.label is None for e in examples),
        }
        for kind in kinds
    }
    return BehaviourCounts(counts, examples)
