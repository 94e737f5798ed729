"""Specification of the knowledge-conflict fact table (steerscope.data.facts)."""

from __future__ import annotations

import re

import pytest

from steerscope.data.facts import (
    DEMO_KINDS,
    FACTS,
    RELATIONS,
    Fact,
    closed_book_prompt,
    context_prompt,
    demo_facts,
    demonstrations,
    normalise_answer,
    split_facts,
    starts_with_answer,
    substitute,
)
from steerscope.errors import InputError

QUERIES = FACTS[::7]


def mentions(text: str, word: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


def test_table_has_at_least_300_unique_facts_over_at_least_5_relations() -> None:
    assert len(FACTS) >= 300
    assert len({(f.relation, f.subject) for f in FACTS}) == len(FACTS)
    assert len({f.relation for f in FACTS}) >= 5
    assert {f.relation for f in FACTS} <= set(RELATIONS)


def test_every_answer_is_a_single_word() -> None:
    for fact in FACTS:
        assert re.fullmatch(r"[A-Za-z]+", fact.answer), fact


def test_context_states_the_fact_and_question_names_the_subject() -> None:
    paris = Fact("France", "capital", "Paris")
    assert paris.context() == "Paris is the capital of France."
    assert paris.context("Berlin") == "Berlin is the capital of France."
    assert paris.question == "What is the capital of France?"
    for fact in FACTS:
        assert mentions(fact.context(), fact.answer) and mentions(fact.question, fact.subject)


def test_substitute_is_another_answer_of_the_same_relation() -> None:
    for fact in FACTS:
        swapped = substitute(fact)
        assert swapped != fact.answer
        assert swapped in {f.answer for f in FACTS if f.relation == fact.relation}
        assert not mentions(fact.question, swapped)


def test_substitutes_and_demonstrations_are_deterministic_by_seed() -> None:
    assert [substitute(f, seed=1) for f in FACTS] == [substitute(f, seed=1) for f in FACTS]
    assert [substitute(f, seed=1) for f in FACTS] != [substitute(f, seed=2) for f in FACTS]
    query = FACTS[0]
    assert demonstrations(query, "context", seed=1) == demonstrations(query, "context", seed=1)
    assert demo_facts(query, seed=1) != demo_facts(query, seed=2)


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_demonstrations_never_mention_the_query_subject_answer_or_substitute(kind: str) -> None:
    for query in QUERIES:
        demos = demonstrations(query, kind, n=3)
        assert len(demos) == 3 and all(d.fact != query for d in demos)
        for demo in demos:
            for word in (query.subject, query.answer, substitute(query)):
                assert not mentions(demo.render(), word), (query, demo)


def test_demonstration_kinds_differ_only_in_contexts_and_answers() -> None:
    query = FACTS[3]
    by_kind = {kind: demonstrations(query, kind) for kind in DEMO_KINDS}
    assert len({tuple(d.fact for d in demos) for demos in by_kind.values()}) == 1
    for c, m, n in zip(by_kind["context"], by_kind["memory"], by_kind["none"], strict=True):
        swapped = substitute(c.fact)
        assert (c.context_answer, c.answer) == (swapped, swapped)
        assert (m.context_answer, m.answer) == (swapped, c.fact.answer)
        assert (n.context_answer, n.answer) == (c.fact.answer, c.fact.answer)


def test_prompt_formats_are_exact() -> None:
    query = Fact("France", "capital", "Paris")
    demo_fact = Fact("Japan", "language", "Japanese")
    closed = closed_book_prompt(query, [demo_fact])
    assert closed == (
        "question: What language do people speak in Japan?\nanswer: Japanese\n\n"
        "question: What is the capital of France?\nanswer:"
    )
    demos = demonstrations(query, "context", n=2)
    prompt = context_prompt(query, demos, conflict=True, substitute="Berlin")
    blocks = prompt.split("\n\n")
    assert len(blocks) == 3
    assert blocks[-1] == (
        "context: Berlin is the capital of France.\nquestion: What is the capital of France?\nanswer:"
    )
    for block, demo in zip(blocks, demos, strict=False):
        assert re.fullmatch(r"context: [^\n]+\nquestion: [^\n]+\nanswer: [A-Za-z]+", block)
        assert block.endswith(f"answer: {demo.answer}")
    plain = context_prompt(query, [], conflict=False)
    assert (
        plain == "context: Paris is the capital of France.\nquestion: What is the capital of France?\nanswer:"
    )


def test_conflict_needs_a_different_substitute() -> None:
    query = Fact("France", "capital", "Paris")
    with pytest.raises(InputError, match="substitute"):
        context_prompt(query, [], conflict=True, substitute="Paris")
    with pytest.raises(InputError, match="substitute"):
        context_prompt(query, [], conflict=True)


def test_unknown_demonstration_kind_names_the_valid_ones() -> None:
    with pytest.raises(InputError, match="context"):
        demonstrations(FACTS[0], "random")


def test_split_is_disjoint_by_fact_complete_and_deterministic() -> None:
    train, held = split_facts(FACTS, held_out=0.25, seed=0)
    assert not set(train) & set(held)
    assert set(train) | set(held) == set(FACTS)
    assert len(held) == round(0.25 * len(FACTS))
    assert split_facts(FACTS, seed=0) == (train, held)
    assert split_facts(FACTS, seed=1) != (train, held)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("Paris", "paris"),
        (" The Euro.", "euro"),
        ("an Apple, a pear!", "apple pear"),
        ("Washington, D.C.", "washington d c"),
        ("Bogotá", "bogota"),
        ("the   THE theatre", "theatre"),
        ("", ""),
    ],
)
def test_normalise_answer_lowercases_and_strips_articles_punctuation_accents(
    text: str, normalised: str
) -> None:
    assert normalise_answer(text) == normalised


def test_starts_with_answer_matches_whole_words_only() -> None:
    assert starts_with_answer("Paris, France", "Paris")
    assert starts_with_answer("the yen", "yen")
    assert not starts_with_answer("Parisian", "Paris")
    assert not starts_with_answer("Oxygen", "O")
    assert not starts_with_answer("It is Paris", "Paris")
