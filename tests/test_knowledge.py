"""Specification of knowledge-selection probing (steerscope.probes.knowledge)."""

from __future__ import annotations

import pytest

import steerscope as ss
from steerscope.data.facts import Fact
from steerscope.probes.knowledge import answer_greedy, behaviour_counts, label_behaviour, memorised_facts

FAMOUS = [
    Fact("France", "capital", "Paris"),
    Fact("Germany", "capital", "Berlin"),
    Fact("Japan", "capital", "Tokyo"),
    Fact("Italy", "capital", "Rome"),
]


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
    assert label_behaviour(output, original="Paris", substitute="Berlin") == label


def test_answer_greedy_returns_first_lines_and_is_batch_consistent(tiny_llama: ss.Model) -> None:
    prompts = ["question: a?\nanswer:", "q\nanswer:", "context: xyz.\nquestion: why?\nanswer:", "hi"]
    batched = answer_greedy(tiny_llama, prompts, max_new_tokens=5, batch_size=4)
    alone = [answer_greedy(tiny_llama, [p], max_new_tokens=5, batch_size=1)[0] for p in prompts]
    assert all(isinstance(a, str) and "\n" not in a for a in batched)
    assert batched == alone


@pytest.mark.slow
def test_embedded_model_knows_famous_capitals(gemma: ss.Model) -> None:
    assert memorised_facts(gemma, FAMOUS, demos=3) == FAMOUS


@pytest.mark.slow
def test_context_demonstrations_make_the_embedded_model_follow_a_conflicting_context(
    gemma: ss.Model,
) -> None:
    result = behaviour_counts(gemma, FAMOUS, kinds=("context",))
    assert sum(result.counts["context"].values()) == len(FAMOUS)
    assert result.counts["context"]["C"] >= 1
    follows = [e for e in result.examples if e.label == "C"]
    assert all(e.substitute != e.fact.answer and e.demo_kind == "context" for e in follows)
