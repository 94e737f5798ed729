"""Specification of the Theory-of-Mind story generators (steerscope.data.tom)."""

from __future__ import annotations

import re

import pytest

from steerscope.data import tom
from steerscope.data.tom import KINDS, TEMPLATE_SETS, TEMPLATES, n_distinct, tom_items, tom_mixture
from steerscope.errors import InputError

CELLS = [(kind, template_set) for kind in KINDS for template_set in TEMPLATE_SETS]
FILLERS = sorted(
    {*tom.NAMES, *tom.PLACES, *tom.OBJECTS, *tom.CONTAINERS, *tom.PACKAGES, *tom.CONTENTS},
    key=len,
    reverse=True,
)
FILLER_PATTERN = re.compile(r"\b(" + "|".join(FILLERS) + r")\b")


def sentences(text: str) -> set[str]:
    return {part.strip() for part in re.split(r"(?<=[.;])\s+", text) if part.strip()}


def masked_sentences(story: str) -> set[str]:
    return sentences(FILLER_PATTERN.sub("_", story))


@pytest.mark.parametrize(("kind", "template_set"), CELLS)
def test_items_are_deterministic_by_seed(kind: str, template_set: str) -> None:
    assert tom_items(kind, template_set, 20, seed=3) == tom_items(kind, template_set, 20, seed=3)
    assert tom_items(kind, template_set, 20, seed=3) != tom_items(kind, template_set, 20, seed=4)


@pytest.mark.parametrize(("kind", "template_set"), CELLS)
def test_each_kind_and_set_has_at_least_200_distinct_items(kind: str, template_set: str) -> None:
    assert n_distinct(kind, template_set) >= 200
    items = tom_items(kind, template_set, 400, seed=0)
    assert len({item.story for item in items}) == 400
    assert {item.template for item in items} == set(range(len(TEMPLATES[(kind, template_set)])))


def test_template_sets_share_no_sentence_template() -> None:
    for kind in KINDS:
        fisher, evaluation = (
            {
                sentence
                for template in TEMPLATES[(kind, template_set)]
                for field in (template.setup, template.false_middle, template.true_middle, template.question)
                for sentence in sentences(field)
            }
            for template_set in TEMPLATE_SETS
        )
        assert not fisher & evaluation


def test_generated_eval_stories_share_no_masked_sentence_with_fisher_stories() -> None:
    fisher = set().union(*(masked_sentences(item.story) for item in tom_mixture("fisher", 400, seed=0)))
    evaluation = set().union(*(masked_sentences(item.story) for item in tom_mixture("eval", 400, seed=0)))
    assert not fisher & evaluation
    assert len(fisher) > 10 and len(evaluation) > 10  # the masking left real sentences to compare


@pytest.mark.parametrize("template_set", TEMPLATE_SETS)
def test_transfer_belief_answer_is_original_location_only_under_false_belief(template_set: str) -> None:
    for item in tom_items("unexpected_transfer", template_set, 200, seed=1):
        original, new = sorted(
            (item.correct, item.foil), key=lambda word: re.search(rf"\b{word.strip()}\b", item.story).start()
        )
        if item.false_belief:
            assert (item.belief_answer, item.reality_answer) == (original, new)
        else:
            assert item.belief_answer == item.reality_answer == new
            assert item.foil == original


@pytest.mark.parametrize("template_set", TEMPLATE_SETS)
def test_contents_belief_answer_is_label_only_under_false_belief(template_set: str) -> None:
    for item in tom_items("unexpected_contents", template_set, 200, seed=1):
        label = re.search(r'"(\w+)"', item.story).group(1)
        actual = (item.foil if item.false_belief else item.correct).strip()
        assert f" {actual}" in item.story and actual != label
        if item.false_belief:
            assert (item.belief_answer, item.reality_answer) == (f" {label}", f" {actual}")
        else:
            assert item.belief_answer == item.reality_answer == f" {actual}"
            assert item.foil == f" {label}"


@pytest.mark.parametrize(("kind", "template_set"), CELLS)
def test_reversed_variant_swaps_the_two_words_of_the_same_story(kind: str, template_set: str) -> None:
    plain = tom_items(kind, template_set, 30, seed=5, false_belief=True, reversed=False)
    flipped = tom_items(kind, template_set, 30, seed=5, false_belief=True, reversed=True)
    for a, b in zip(plain, flipped, strict=True):
        assert not a.reversed and b.reversed
        assert (a.correct, a.foil) == (b.foil, b.correct)
        swap = {a.correct.strip(): a.foil.strip(), a.foil.strip(): a.correct.strip()}
        pattern = rf"\b({a.correct.strip()}|{a.foil.strip()})\b"
        assert re.sub(pattern, lambda match, swap=swap: swap[match.group(1)], a.story) == b.story


def test_conditions_alternate_so_small_sets_are_balanced() -> None:
    items = tom_items("unexpected_transfer", "fisher", 8, seed=0)
    assert sum(item.false_belief for item in items) == 4
    assert sum(item.reversed for item in items) == 4
    assert all(item.false_belief for item in tom_items("unexpected_contents", "eval", 6, false_belief=True))


@pytest.mark.parametrize("n", [2, 8, 101])
def test_mixture_balances_kind_and_belief(n: int) -> None:
    items = tom_mixture("eval", n, seed=2)
    assert len(items) == len({item.story for item in items}) == n
    assert all(item.template_set == "eval" for item in items)
    kinds = sum(item.kind == "unexpected_transfer" for item in items)
    beliefs = sum(item.false_belief for item in items)
    assert abs(2 * kinds - n) <= 1 and abs(2 * beliefs - n) <= 1
    assert tom_mixture("eval", n, seed=2) == items


def test_bad_arguments_name_the_valid_choices() -> None:
    with pytest.raises(InputError, match="unexpected_transfer"):
        tom_items("sally_anne", "fisher", 3)
    with pytest.raises(InputError, match="fisher"):
        tom_items("unexpected_transfer", "train", 3)
    with pytest.raises(InputError, match=str(n_distinct("unexpected_contents", "eval"))):
        tom_items("unexpected_contents", "eval", n_distinct("unexpected_contents", "eval") + 1)


@pytest.mark.parametrize("words", [tom.CONTAINERS, tom.CONTENTS], ids=["containers", "contents"])
def test_answer_words_are_single_tokens_with_distinct_first_tokens(gemma, words: tuple[str, ...]) -> None:
    encoded = [gemma.tokenizer(" " + word, add_special_tokens=False)["input_ids"] for word in words]
    assert all(len(ids) == 1 for ids in encoded), [
        w for w, ids in zip(words, encoded, strict=True) if len(ids) > 1
    ]
    assert len({ids[0] for ids in encoded}) == len(words)


def test_every_item_pair_differs_at_the_first_token(gemma) -> None:
    first = {}
    for item in tom_mixture("fisher", 200) + tom_mixture("eval", 200):
        for word in (item.correct, item.foil):
            first.setdefault(word, gemma.tokenizer(word, add_special_tokens=False)["input_ids"][0])
        assert first[item.correct] != first[item.foil]
        assert item.story[-1] != " " and item.correct.startswith(" ")
