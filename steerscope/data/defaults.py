"""The data suite a pretrained model gets when the user gives none: the natural-language sets
steerscope writes itself (an organism gets its world's, `steerscope.organisms.suite_for`)."""

from __future__ import annotations

import random
from functools import lru_cache

from steerscope.data import arithmetic, facts, tom
from steerscope.data.conflicts import from_fact
from steerscope.data.generic import generic_documents
from steerscope.data.records import Conflict, ContrastPair
from steerscope.data.sentiment import NEUTRAL_PROMPTS, n_distinct_pairs, sentiment_pairs
from steerscope.data.suite import ConflictData, DataSuite, PairData, ProblemData, TextData, TomData

NATURAL = "steerscope:natural"

_FACT_OF = {(f.question, f.answer): f for f in facts.FACTS}


def _natural_fact(record: Conflict) -> facts.Fact:
    return _FACT_OF[(record.question, record.org_answer[0])]


def _natural_candidates(n: int | None, seed: int) -> list[Conflict]:
    """`n` facts of the table (all for None) in an order fixed by seed, with that seed's substitutes."""
    table = list(facts.FACTS)
    chosen = random.Random(f"candidates/{seed}").sample(
        table, len(table) if n is None else min(n, len(table))
    )
    return [from_fact(f, facts.substitute(f, seed)) for f in chosen]


def _natural_demos(record: Conflict, k: int, seed: int) -> list[Conflict]:
    """The table's demonstrations for a fact (`facts.demo_facts`), as records."""
    return list(_table_demos(_natural_fact(record), k, seed))


@lru_cache(maxsize=4096)
def _table_demos(fact: facts.Fact, k: int, seed: int) -> tuple[Conflict, ...]:
    """Computed once per fact, count and seed: every push and conflict of a prompt asks again."""
    return tuple(from_fact(f, facts.substitute(f, seed)) for f in facts.demo_facts(fact, k, seed))


def _sentiment(n_train: int, n_heldout: int, seed: int) -> tuple[list[ContrastPair], list[ContrastPair]]:
    pairs = [ContrastPair(p, n) for p, n in sentiment_pairs(n_train + n_heldout, seed=seed)]
    return pairs[:n_train], pairs[n_train:]


def natural_suite() -> DataSuite:
    """The natural-language sets: ToM stories, the fact table, word problems, offline text, sentiment pairs."""
    return DataSuite(
        name="natural",
        tom=TomData(tom.tom_mixture, NATURAL, tom.mixture_capacity),
        conflicts=ConflictData(
            _natural_candidates, _natural_demos, source=NATURAL, available=lambda split: len(facts.FACTS)
        ),
        problems=ProblemData(arithmetic.arithmetic_problems, arithmetic.few_shot_prompt, NATURAL),
        text=TextData(lambda: [text for _, text in generic_documents("offline")], 128, NATURAL),
        pairs=PairData(_sentiment, NEUTRAL_PROMPTS, NATURAL, lambda split: n_distinct_pairs()),
    )
