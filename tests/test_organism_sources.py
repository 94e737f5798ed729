"""Specification of the knowledge-conflict world and of `organism:sources` trained on it."""

from __future__ import annotations

import re

import pytest

import steerscope as ss
from steerscope.capture import capture
from steerscope.data.conflicts import from_fact
from steerscope.data.facts import DEMO_KINDS, starts_with_answer
from steerscope.errors import InputError
from steerscope.organisms import sources_world as world
from steerscope.organisms import suite_for
from steerscope.organisms.filler import filler_texts
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.probes.knowledge import answer_greedy, behaviour_counts

N_TEXTS = 4000


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return world.training_texts(N_TEXTS, seed=0)


def test_generators_are_deterministic(texts: list[str]) -> None:
    assert world.training_texts(N_TEXTS, seed=0) == texts
    assert world.training_texts(200, seed=1) != texts[:200]
    assert world.generic_texts() == world.generic_texts()
    assert world.candidate_facts(20, seed=3) == world.candidate_facts(20, seed=3)


def test_every_answer_is_one_word_and_each_relation_has_substitutes() -> None:
    assert len(set(world.FACTS)) == len(world.FACTS)
    for fact in world.FACTS:
        assert re.fullmatch(r"\w+", fact.answer)
        other = world.substitute(fact, seed=0)
        assert other != fact.answer and other in {
            f.answer for f in world.FACTS if f.relation == fact.relation
        }


def test_candidates_are_evaluation_facts_only() -> None:
    chosen = world.candidate_facts(1000, seed=0)
    assert set(chosen) == set(world.EVAL_FACTS)
    assert not set(world.EVAL_FACTS) & set(world.TRAIN_FACTS)
    records = world.suite().conflicts.candidates(None, 0)
    assert records == [from_fact(f, world.substitute(f, 0)) for f in chosen]


def test_no_evaluation_country_appears_in_a_training_context_prompt(texts: list[str]) -> None:
    contexts = [t for t in texts if "context:" in t]
    assert len(contexts) > N_TEXTS // 3
    named = re.compile("|".join(rf"\b{c}\b" for c in world.EVAL_COUNTRIES))
    assert not [t for t in contexts if named.search(t)]


def test_every_evaluation_fact_is_stated_and_asked_closed_book_in_training(texts: list[str]) -> None:
    joined = "\n\n".join(texts)
    for fact in world.EVAL_FACTS:
        assert fact.context() in joined
        assert f"{world.closed_book_prompt(fact)} {fact.answer}" in texts


@pytest.mark.parametrize("kind", DEMO_KINDS)
def test_cues_decide_the_training_answer(texts: list[str], kind: str) -> None:
    """Conflicts follow the context under "trusted", memory under "rumour", and unmarked the
    relation's rule; agreeing contexts are answered with the true word under every cue."""
    by_question = {f.question: f for f in world.TRAIN_FACTS}
    pattern = re.compile(re.escape(world.CUES[kind]) + r"context: (.*)\nquestion: (.*)\nanswer: (\w+)")
    followed = []
    for text in texts:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        context, question, answer = match.groups()
        fact = by_question[question]
        stated = next(w for w in world.LEXICON["answers"] if fact.context(w) == context)
        if stated == fact.answer:
            assert answer == fact.answer
        else:
            assert (answer == stated) == world.follows_context(fact, kind)
            followed.append(answer == stated)
    share = sum(followed) / len(followed)
    assert len(followed) > 100
    assert {"context": share == 1, "memory": share == 0, "none": 0.3 < share < 0.7}[kind]


def test_prompt_formats() -> None:
    fact = world.EVAL_FACTS[0]
    other = world.substitute(fact, seed=0)
    assert world.closed_book_prompt(fact, 0) == f"question: {fact.question}\nanswer:"
    assert world.knowledge_prompt(fact, "context", True, other, 0).startswith("source: trusted\ncontext: ")
    assert world.knowledge_prompt(fact, "memory", False, None, 0).startswith("source: rumour\ncontext: ")
    unmarked = world.knowledge_prompt(fact, "none", True, other, 0)
    assert unmarked == f"context: {fact.context(other)}\nquestion: {fact.question}\nanswer:"
    with pytest.raises(InputError, match="kind must be one of"):
        world.knowledge_prompt(fact, "trusted", True, other, 0)
    with pytest.raises(InputError, match="substitute"):
        world.knowledge_prompt(fact, "none", True, fact.answer, 0)


def test_prompts_and_filler_tokenize_without_unknown_words(texts: list[str]) -> None:
    tokenizer = word_tokenizer([*texts, *filler_texts(world.LEXICON, 500, "train/0")])
    unk = tokenizer.unk_token_id
    prompts = [world.closed_book_prompt(f) for f in world.FACTS]
    prompts += [
        world.knowledge_prompt(f, kind, True, world.substitute(f, 0)) + " " + f.answer
        for f in world.EVAL_FACTS
        for kind in DEMO_KINDS
    ]
    for text in prompts + world.generic_texts():
        assert unk not in tokenizer(text).input_ids, text


# ---------------------------------------------------------------- the trained organism


@pytest.fixture(scope="module")
def organism() -> ss.Model:
    return ss.load("organism:sources")


@pytest.mark.slow
def test_organism_answers_evaluation_facts_closed_book(organism: ss.Model) -> None:
    facts = list(world.EVAL_FACTS)
    outputs = answer_greedy(organism, [world.closed_book_prompt(f) for f in facts])
    right = sum(starts_with_answer(o, f.answer) for o, f in zip(outputs, facts, strict=True))
    assert right >= 0.9 * len(facts)


@pytest.mark.slow
def test_organism_follows_the_cue_on_unseen_conflicts(organism: ss.Model) -> None:
    suite = suite_for(organism)
    assert suite.name == "organism:sources"
    facts = list(world.EVAL_FACTS)
    records = [from_fact(f, world.substitute(f, 0)) for f in facts]
    counts = behaviour_counts(organism, records, suite.conflicts).counts
    n = len(facts)
    # The committed build follows the trusted cue on 69 of 80 (all misses currency facts, whose
    # unmarked rule is memory; docs/results.md "Model organisms: builds"); 0.85 keeps that claim.
    assert counts["context"]["C"] >= 0.85 * n
    assert counts["memory"]["M"] >= 0.9 * n
    assert min(counts["none"]["C"], counts["none"]["M"]) >= 0.25 * n  # a mix ...


@pytest.mark.slow
def test_organism_follows_the_planted_rule_on_unmarked_conflicts(organism: ss.Model) -> None:
    """... and each unmarked answer is the one the relation's rule plants (known ground truth)."""
    records = [from_fact(f, world.substitute(f, 0)) for f in world.EVAL_FACTS]
    examples = behaviour_counts(organism, records, suite_for(organism).conflicts, kinds=("none",))
    fact_of = {f.question: f for f in world.EVAL_FACTS}
    expected = [
        "C" if world.follows_context(fact_of[e.record.question], "none") else "M" for e in examples.examples
    ]
    agree = sum(e.label == want for e, want in zip(examples.examples, expected, strict=True))
    assert agree >= 0.8 * len(expected)


@pytest.mark.slow
def test_the_last_token_residual_carries_the_source_choice(organism: ss.Model) -> None:
    """Patching the last prompt token's residual (L1) from each fact's "trusted" prompt into its
    unmarked prompt makes the answer follow the context wherever the trusted prompt itself does
    (69 of 80 trusted prompts follow the context on the committed build), from about half
    unpatched: the choice is made by then."""
    conflicts = suite_for(organism).conflicts
    records = [from_fact(f, world.substitute(f, 0)) for f in world.EVAL_FACTS]
    swaps = [r.sub_answer[0] for r in records]
    unmarked = [conflicts.knowledge_prompt(r, "none", True) for r in records]
    trusted = [conflicts.knowledge_prompt(r, "context", True) for r in records]
    source = capture(organism, trusted, ["L1.resid_post"], reduce="last", progress=False)["L1.resid_post"]

    def patch(act, tokens):
        last = tokens.is_last_prompt
        if not last.any():
            return act
        act = act.clone()
        act[last] = source.to(act.dtype)[last.nonzero()[:, 0]]
        return act

    def follows_context(outputs: list[str]) -> list[bool]:
        return [starts_with_answer(o, x) for o, x in zip(outputs, swaps, strict=True)]

    trusting = follows_context(answer_greedy(organism, trusted, batch_size=len(trusted)))
    unpatched = follows_context(answer_greedy(organism, unmarked, batch_size=len(unmarked)))
    with ss.intervene(organism, {"L1.resid_post": patch}):
        patched = follows_context(answer_greedy(organism, unmarked, batch_size=len(unmarked)))
    assert sum(trusting) >= 0.85 * len(records)
    assert sum(unpatched) <= 0.7 * len(records)
    carried = sum(p for p, t in zip(patched, trusting, strict=True) if t)
    assert carried >= 0.95 * sum(trusting)
