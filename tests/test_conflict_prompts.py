"""Knowledge-conflict prompts from records: the built-in facts and the sources organism keep their
exact prompts, and a user's NQ-Swap records are asked in the same layout with demonstrations
drawn from their other records."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from steerscope.data import facts
from steerscope.data.conflicts import PUSHES, choose_demonstrations, from_fact
from steerscope.data.defaults import natural_suite
from steerscope.data.user_data import read_user_data
from steerscope.errors import InputError
from steerscope.organisms import sources_world

DATA = Path(__file__).parent / "data"


def old_natural_prompts(seed: int, n: int) -> list[str]:
    """The natural suite's prompts as they were built before records: straight from `facts`."""
    chosen = random.Random(f"candidates/{seed}").sample(list(facts.FACTS), n)
    prompts = []
    for fact in chosen:
        swapped = facts.substitute(fact, seed)
        prompts.append(facts.closed_book_prompt(fact, facts.demo_facts(fact, 3, seed)))
        for push in PUSHES:
            shown = facts.demonstrations(fact, push, 3, seed)
            prompts += [
                facts.context_prompt(fact, shown, True, swapped),
                facts.context_prompt(fact, shown, False),
            ]
    return prompts


def new_natural_prompts(seed: int, n: int) -> list[str]:
    conflicts = natural_suite().conflicts
    prompts = []
    for record in conflicts.candidates(n, seed):
        prompts.append(conflicts.closed_book_prompt(record, 3, seed))
        for push in PUSHES:
            prompts += [
                conflicts.knowledge_prompt(r, push, c, 3, seed) for r, c in ((record, True), (record, False))
            ]
    return prompts


@pytest.mark.parametrize("seed", [0, 3])
def test_built_in_facts_keep_their_exact_prompts(seed: int) -> None:
    assert new_natural_prompts(seed, 40) == old_natural_prompts(seed, 40)


def test_built_in_prompts_are_pinned_byte_for_byte() -> None:
    joined = "\x00".join(new_natural_prompts(0, 25)).encode()
    assert hashlib.sha256(joined).hexdigest()[:16] == "64dda5b1ffb83768"


def test_all_candidates_are_the_whole_table_in_a_fixed_order() -> None:
    records = natural_suite().conflicts.candidates(None, 0)
    order = random.Random("candidates/0").sample(list(facts.FACTS), len(facts.FACTS))
    assert records == [from_fact(f, facts.substitute(f, 0)) for f in order]


def test_sources_organism_keeps_its_cue_prompts() -> None:
    conflicts = sources_world.suite().conflicts
    for record, fact in zip(conflicts.candidates(12, 0), sources_world.candidate_facts(12, 0), strict=True):
        swapped = sources_world.substitute(fact, 0)
        assert conflicts.closed_book_prompt(record) == sources_world.closed_book_prompt(fact)
        for push in PUSHES:
            assert conflicts.knowledge_prompt(record, push, True) == sources_world.knowledge_prompt(
                fact, push, True, swapped
            )
            assert conflicts.knowledge_prompt(record, push, False) == sources_world.knowledge_prompt(
                fact, push, False
            )


@pytest.fixture(scope="module")
def user_conflicts():
    data = read_user_data("conflicts", str(DATA / "conflicts.jsonl"))
    return data.records, natural_suite().conflicts.with_user(data)


def test_user_records_are_asked_in_the_spare_layout(user_conflicts) -> None:
    records, conflicts = user_conflicts
    query = records[0]
    prompt = conflicts.knowledge_prompt(query, "none", True, demos=2, seed=0)
    blocks = prompt.split("\n\n")
    assert len(blocks) == 3
    assert blocks[-1] == f"context: {query.sub_context}\nquestion: {query.question}\nanswer:"
    demos = choose_demonstrations(query, records, 2, 0)
    for block, demo in zip(blocks, demos, strict=False):
        assert (
            block == f"context: {demo.org_context}\nquestion: {demo.question}\nanswer: {demo.org_answer[0]}"
        )
    closed = conflicts.closed_book_prompt(query, demos=2, seed=0)
    assert closed == "\n\n".join(
        [
            *(f"question: {d.question}\nanswer: {d.org_answer[0]}" for d in demos),
            f"question: {query.question}\nanswer:",
        ]
    )


def test_user_demonstrations_push_as_spare_does(user_conflicts) -> None:
    records, conflicts = user_conflicts
    query = records[3]
    (demo,) = choose_demonstrations(query, records, 1, 0)
    first = {push: conflicts.knowledge_prompt(query, push, True, 1, 0).split("\n\n")[0] for push in PUSHES}
    assert (
        first["context"]
        == f"context: {demo.sub_context}\nquestion: {demo.question}\nanswer: {demo.sub_answer[0]}"
    )
    assert (
        first["memory"]
        == f"context: {demo.sub_context}\nquestion: {demo.question}\nanswer: {demo.org_answer[0]}"
    )
    assert (
        first["none"]
        == f"context: {demo.org_context}\nquestion: {demo.question}\nanswer: {demo.org_answer[0]}"
    )


def test_user_demonstrations_are_other_records_that_never_give_the_answer_away(user_conflicts) -> None:
    records, _ = user_conflicts
    for query in records:
        demos = choose_demonstrations(query, records, 3, seed=1)
        assert len(demos) == 3 and query not in demos
        assert demos == choose_demonstrations(query, records, 3, seed=1)
        for demo in demos:
            text = " ".join((demo.question, demo.org_context, demo.sub_context)).lower()
            assert not any(
                answer.lower() in text.split() for answer in (*query.org_answer, *query.sub_answer)
            )


def test_too_few_records_to_demonstrate_is_a_clear_error(user_conflicts) -> None:
    records, _ = user_conflicts
    with pytest.raises(InputError, match="other records can demonstrate"):
        choose_demonstrations(records[0], records[:3], 5, 0)


def test_user_conflicts_split_by_content_with_the_held_out_share(user_conflicts) -> None:
    records, conflicts = user_conflicts
    train, held = conflicts.split(records, 0.3, 0)
    assert sorted(map(str, train + held)) == sorted(map(str, records)) and not set(train) & set(held)
    assert conflicts.split(records, 0.3, 99) == (train, held)  # the seed does not move records
