"""Knowledge-selection behaviour: does a model answer from the context or from memory?

Follows the SpARE setup (Zhao et al. 2025, arXiv 2410.15999; probing companion arXiv 2410.16090)
on a `DataSuite`'s facts: keep the facts a model answers right closed-book ("memorised"), give
it a context that swaps the answer for a same-type substitute, and label its greedy answer
"C" (follows the context: says the substitute) or "M" (follows memory: says the original).
Anything else is dropped. On natural data (`steerscope.data.facts`) the paper elicits both
behaviours with the demonstrations alone; an organism was trained with a cue in the prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from steerscope.data.facts import DEMO_KINDS, Fact, starts_with_answer
from steerscope.data.suite import DataSuite, natural_suite
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
    batch_size: int = 16,
    suite: DataSuite | None = None,
) -> list[Fact]:
    """The facts the model answers right to the suite's closed-book prompt (default: the natural
    facts with `demos` demonstrations).

    Right means the normalised greedy answer starts with the normalised answer word
    (whole words: "paris france" counts for Paris, "parisian" does not).
    """
    closed_book = (suite or natural_suite(demos)).need("closed_book_prompt")
    prompts = [closed_book(f, seed) for f in facts]
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
    demo_kind: str  # the prompt's push: "context", "memory" or "none"


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
    batch_size: int = 16,
    max_new_tokens: int = 4,
    suite: DataSuite | None = None,
) -> BehaviourCounts:
    """Conflicting prompts for every fact under each kind of push (demonstrations on natural data,
    a cue on an organism), answered and labelled; the suite defaults to the natural one."""
    suite = suite or natural_suite(demos)
    prompt_for, substitute = suite.need("knowledge_prompt"), suite.need("substitute")
    examples = []
    for kind in kinds:
        cases = [(f, substitute(f, seed)) for f in facts]
        prompts = [prompt_for(f, kind, True, s, seed) for f, s in cases]
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
