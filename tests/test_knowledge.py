"""Specification of knowledge-selection probing (steerscope.probes.knowledge)."""

from __future__ import annotations

import pytest

import steerscope as ss
from steerscope.data.conflicts import from_fact
from steerscope.data.defaults import natural_suite
from steerscope.data.facts import Fact, substitute
from steerscope.probes.knowledge import answer_greedy, behaviour_counts, label_behaviour, memorised_facts

FAMOUS = [
    from_fact(fact, substitute(fact))
    for fact in (
        Fact("France", "capital", "Paris"),
        Fact("Germany", "capital", "Berlin"),
        Fact("Japan", "capital", "Tokyo"),
        Fact("Italy", "capital", "Rome"),
    )
]
NATURAL = natural_suite().conflicts


@pytest.mark.parametrize(
    ("output", "label"),
    [
        ("Berlin", "C"),
        ("the Berlin.", "C"),
        ("Berlin, Germany", "C"),
        ("Paris", "M"),
        ("paris!", "M"),
        ("London", None),
        ("Parisian", None),
        ("It is Berlin", None),
        ("", None),
    ],
)
def test_label_behaviour_substitute_is_context_original_is_memory_else_dropped(
    output: str, label: str | None
) -> None:
    assert label_behaviour(output, org_answer=["Paris"], sub_answer=["Berlin"]) == label


def test_label_behaviour_accepts_any_of_several_answers() -> None:
    assert (
        label_behaviour(
            "Dickens wrote it", ["William Shakespeare", "Shakespeare"], ["Charles Dickens", "Dickens"]
        )
        == "C"
    )
    assert (
        label_behaviour(
            "Shakespeare.", ["William Shakespeare", "Shakespeare"], ["Charles Dickens", "Dickens"]
        )
        == "M"
    )
    assert label_behaviour("Charles", ["William Shakespeare"], ["Charles Dickens"]) is None


def test_answer_greedy_returns_first_lines_and_is_batch_consistent(tiny_llama: ss.Model) -> None:
    prompts = ["question: a?\nanswer:", "q\nanswer:", "context: xyz.\nquestion: why?\nanswer:", "hi"]
    batched = answer_greedy(tiny_llama, prompts, max_new_tokens=5, batch_size=4)
    alone = [answer_greedy(tiny_llama, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert all(isinstance(a, str) and "\n" not in a for a in batched)
    assert batched == alone


@pytest.mark.slow
def test_embedded_model_knows_famous_capitals(gemma: ss.Model) -> None:
    assert memorised_facts(gemma, FAMOUS, NATURAL, demos=3) == FAMOUS


@pytest.mark.slow
def test_context_demonstrations_make_the_embedded_model_follow_a_conflicting_context(
    gemma: ss.Model,
) -> None:
    result = behaviour_counts(gemma, FAMOUS, NATURAL, kinds=("context",))
    assert sum(result.counts["context"].values()) == len(FAMOUS)
    assert result.counts["context"]["C"] >= 1
    follows = [e for e in result.examples if e.label == "C"]
    assert all(e.record.sub_answer != e.record.org_answer and e.demo_kind == "context" for e in follows)
