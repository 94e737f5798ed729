"""Knowledge-selection behaviour: does a model answer from the context or from memory?

Follows the SpARE setup (Zhao et al. 2025, arXiv 2410.15999; probing companion arXiv 2410.16090)
on `Conflict` records asked through a `ConflictData` (the model's default facts or a user's
NQ-Swap-style file): keep the records a model answers right closed-book ("memorised"), give it a
context that swaps the answer for a substitute, and label its greedy answer "C" (follows the
context: says a substitute answer) or "M" (follows memory: says an original answer). Anything
else is dropped. On natural data the paper elicits both behaviours with the demonstrations alone;
an organism was trained with a cue in the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from steerscope.data.conflicts import PUSHES
from steerscope.data.facts import starts_with_answer
from steerscope.data.records import Conflict
from steerscope.data.suite import ConflictData
from steerscope.intervene import Edit
from steerscope.model import ModelLike
from steerscope.prefix_cache import CachedPrompts
from steerscope.probes.lm_metrics import greedy_continuations, greedy_continuations_in_settings

Behaviour = Literal["C", "M"]


#: New tokens and batch size of `answer_greedy`'s short answers.
ANSWER_TOKENS, ANSWER_BATCH = 4, 16


@torch.no_grad()
def answer_greedy(
    model: ModelLike,
    prompts: Sequence[str],
    max_new_tokens: int = ANSWER_TOKENS,
    batch_size: int = ANSWER_BATCH,
    progress: bool = False,
    cached: CachedPrompts | None = None,
) -> list[str]:
    """The first line of each prompt's greedy continuation (left-padded batches, each row stopped
    once its first line has ended; `cached`: see `greedy_continuations`)."""
    return greedy_continuations(model, prompts, max_new_tokens, batch_size, progress, cached, first_line=True)


def answer_greedy_in_settings(
    model: ModelLike,
    cached: CachedPrompts,
    settings: Sequence[Mapping[str, Edit]],
    max_new_tokens: int = ANSWER_TOKENS,
    progress: str | None = None,
) -> list[list[str]]:
    """`answer_greedy(model, cached.prompts, cached=cached)` under each setting's edits (from the
    last prompt token on), one list per setting, the settings run as rows of shared batches
    (`greedy_continuations_in_settings`)."""
    return greedy_continuations_in_settings(
        model, cached, settings, max_new_tokens, first_line=True, progress=progress
    )


def says_any(output: str, answers: Sequence[str]) -> bool:
    """Whether `output` starts with one of the accepted `answers` (`starts_with_answer`)."""
    return any(starts_with_answer(output, answer) for answer in answers)


def memorised_facts(
    model: ModelLike,
    records: Sequence[Conflict],
    conflicts: ConflictData,
    demos: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> list[Conflict]:
    """The records the model answers right to the closed-book prompt.

    Right means the normalised greedy answer starts with a normalised accepted answer as whole
    words ("paris france" counts for Paris, "parisian" does not).
    """
    prompts = [conflicts.closed_book_prompt(r, demos, seed) for r in records]
    outputs = answer_greedy(model, prompts, batch_size=batch_size, progress=progress)
    return [r for r, out in zip(records, outputs, strict=True) if says_any(out, r.org_answer)]


def label_behaviour(output: str, org_answer: Sequence[str], sub_answer: Sequence[str]) -> Behaviour | None:
    """ "C" if the output starts with a substitute answer, "M" if with an original one, else None."""
    if says_any(output, sub_answer):
        return "C"
    if says_any(output, org_answer):
        return "M"
    return None


def known_conflicts(
    model: ModelLike,
    conflicts: ConflictData,
    n_candidates: int | None,
    demos: int,
    seed: int,
    progress: bool = False,
) -> tuple[list[Conflict], list[Conflict]]:
    """(candidates, memorised): `n_candidates` candidate records (all for None) and those of
    them the model answers right closed-book."""
    candidates = conflicts.candidates(n_candidates, seed)
    return candidates, memorised_facts(model, candidates, conflicts, demos, seed, progress=progress)


def conflict_pairs(
    records: Sequence[Conflict], conflicts: ConflictData, demos: int, seed: int
) -> tuple[list[str], list[str]]:
    """For each record, a conflicting and an agreeing context prompt pushing toward neither source
    (the same neutral demonstrations on natural data, no cue on an organism)."""
    conflicting = [conflicts.knowledge_prompt(r, "none", True, demos, seed) for r in records]
    agreeing = [conflicts.knowledge_prompt(r, "none", False, demos, seed) for r in records]
    return conflicting, agreeing


@dataclass(frozen=True)
class LabelledExample:
    """One conflicting prompt, the model's answer and its label (None: dropped)."""

    prompt: str
    output: str
    label: Behaviour | None
    record: Conflict
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
    model: ModelLike,
    records: Sequence[Conflict],
    conflicts: ConflictData,
    kinds: Sequence[str] = PUSHES,
    demos: int = 3,
    seed: int = 0,
    batch_size: int = 16,
    max_new_tokens: int = 4,
    progress: bool = False,
) -> BehaviourCounts:
    """Conflicting prompts for every record under each kind of push (demonstrations on natural
    data, a cue on an organism), answered and labelled."""
    examples = []
    for kind in kinds:
        prompts = [conflicts.knowledge_prompt(r, kind, True, demos, seed) for r in records]
        outputs = answer_greedy(model, prompts, max_new_tokens, batch_size, progress)
        examples += [
            LabelledExample(p, out, label_behaviour(out, r.org_answer, r.sub_answer), r, kind)
            for p, out, r in zip(prompts, outputs, records, strict=True)
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
