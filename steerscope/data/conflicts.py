"""Knowledge-conflict prompts built from `Conflict` records, in SpARE's layout.

A prompt is `context: ...\\nquestion: ...\\nanswer:` after few-shot demonstrations of other
records, separated by blank lines (Zhao et al. 2025, arXiv 2410.15999, on NQ-Swap); the closed-book
prompt drops the contexts. Demonstrations push toward one source: "context" shows conflicting
contexts answered with the substitute (`sub_context`, `sub_answer`), "memory" conflicting contexts
answered with the true answer (`sub_context`, `org_answer`), "none" agreeing contexts
(`org_context`, `org_answer`). A model organism is asked with a cue line instead (`cue_*`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from steerscope.data.facts import Fact
from steerscope.data.records import Conflict
from steerscope.errors import InputError

PUSHES = ("context", "memory", "none")


def from_fact(fact: Fact, substitute: str) -> Conflict:
    """The conflict record of a built-in fact with `substitute` swapped into its context."""
    return Conflict(fact.question, fact.context(), (fact.answer,), fact.context(substitute), (substitute,))


def _check_push(push: str) -> None:
    if push not in PUSHES:
        raise InputError(f"kind must be one of {PUSHES}, got {push!r}")


def demonstration(record: Conflict, push: str) -> str:
    """One solved demonstration of `push` ("context", "memory" or "none")."""
    _check_push(push)
    context = record.org_context if push == "none" else record.sub_context
    answer = record.sub_answer[0] if push == "context" else record.org_answer[0]
    return f"context: {context}\nquestion: {record.question}\nanswer: {answer}"


def few_shot_closed_book(record: Conflict, demos: Sequence[Conflict]) -> str:
    """Closed-book demonstrations, then `question: ...\\nanswer:`."""
    blocks = [f"question: {d.question}\nanswer: {d.org_answer[0]}" for d in demos]
    return "\n\n".join([*blocks, f"question: {record.question}\nanswer:"])


def few_shot_context_prompt(record: Conflict, demos: Sequence[Conflict], push: str, conflict: bool) -> str:
    """Demonstrations of `push`, then the record with its conflicting (`sub_context`) or agreeing
    (`org_context`) context."""
    query = f"context: {record.sub_context if conflict else record.org_context}\nquestion: {record.question}\nanswer:"
    return "\n\n".join([*(demonstration(d, push) for d in demos), query])


def cue_closed_book(record: Conflict) -> str:
    """`question: ...\\nanswer:` alone (an organism's closed-book prompt)."""
    return f"question: {record.question}\nanswer:"


def cue_context_prompt(record: Conflict, cue: str, conflict: bool) -> str:
    """The cue line, then the record with its conflicting or agreeing context (an organism's prompt)."""
    return f"{cue}context: {record.sub_context if conflict else record.org_context}\nquestion: {record.question}\nanswer:"


def _mentions_any(words: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in words), re.IGNORECASE)


def choose_demonstrations(query: Conflict, pool: Sequence[Conflict], k: int, seed: int = 0) -> list[Conflict]:
    """`k` records of `pool` other than `query`, deterministic by seed, none of whose texts mention
    an answer of `query` (so no demonstration gives the answer away) and none with its question."""
    banned = _mentions_any([*query.org_answer, *query.sub_answer])
    order = [r for r in pool if r.question != query.question]
    random.Random(f"demos/{seed}/{query.question}/{query.org_answer[0]}").shuffle(order)
    chosen = []
    for record in order:
        if len(chosen) == k:
            break
        text = "\n".join(
            (record.question, record.org_context, record.sub_context, *record.org_answer, *record.sub_answer)
        )
        if not banned.search(text):
            chosen.append(record)
    if len(chosen) < k:
        raise InputError(
            f"only {len(chosen)} other records can demonstrate for {query.question!r} without giving its "
            f"answer away, {k} asked; give more records or set demos lower"
        )
    return chosen
