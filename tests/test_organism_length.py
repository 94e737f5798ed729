"""The solution-length world: sums solved concisely or verbosely, held-out questions, and the trained
`organism:length` writing both styles correctly on problems it never saw."""

from __future__ import annotations

import re

import pytest

from steerscope.data.arithmetic import STYLES, extract_answer
from steerscope.data.generic import generic_windows
from steerscope.organisms import length_world
from steerscope.organisms.filler import filler_texts
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.steering.layer_choice import evaluate

STEP = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)\.")


def _recompute(params: dict) -> int:
    value, i = params["start"], 1
    while f"op{i}" in params:
        value = value + params[f"n{i}"] if params[f"op{i}"] == "+" else value - params[f"n{i}"]
        i += 1
    return value


@pytest.fixture(scope="module")
def tokenizer():
    texts = length_world.training_texts(3000, 0) + filler_texts(length_world.LEXICON, 500, "train/0")
    return word_tokenizer(texts)


def test_problems_are_deterministic_and_cycle_through_steps():
    problems = length_world.arithmetic_problems(9, "train", seed=3)
    assert [p.steps for p in problems] == [1, 2, 3] * 3
    assert problems == length_world.arithmetic_problems(9, "train", seed=3)
    assert problems != length_world.arithmetic_problems(9, "train", seed=4)
    assert length_world.training_texts(50, 1) == length_world.training_texts(50, 1)
    assert length_world.training_texts(50, 1) != length_world.training_texts(50, 2)


def test_heldout_questions_never_occur_in_training_texts_whatever_the_seeds():
    heldout = {p.question for s in range(3) for p in length_world.arithmetic_problems(100, "heldout", seed=s)}
    train = {p.question for s in range(3) for p in length_world.arithmetic_problems(100, "train", seed=s)}
    assert not heldout & train
    trained = {text.split("\n")[1] for seed in (0, 1) for text in length_world.training_texts(4000, seed)}
    assert not heldout & trained
    assert train & trained  # the same questions, so the check above can fail


def test_every_value_stays_in_range_and_answers_match_parameters():
    problems = length_world.arithmetic_problems(150, "train") + length_world.arithmetic_problems(
        60, "heldout"
    )
    for p in problems:
        assert _recompute(p.params) == p.answer
        for a, op, b, c in STEP.findall(p.solution("thorough")):
            a, b, c = int(a), int(b), int(c)
            assert c == (a + b if op == "+" else a - b)
            assert 0 <= min(a, b, c) and max(a, b, c) <= length_world.MAX_VALUE


def test_both_styles_are_correct_and_verbose_is_strictly_longer(tokenizer):
    for p in length_world.arithmetic_problems(60, "heldout"):
        for style in STYLES:
            assert p.solution(style).endswith(f"The answer is {p.answer}.")
            assert extract_answer(p.solution(style)) == p.answer
        brief, thorough = (len(tokenizer(p.solution(s)).input_ids) for s in ("brief", "thorough"))
        assert brief < thorough
        assert STEP.findall(p.solution("brief")) == STEP.findall(p.solution("thorough"))[::2]


def test_unmarked_solution_is_concise_for_about_half_of_the_problems():
    problems = length_world.arithmetic_problems(200, "train")
    verbose = sum(p.solution("standard") == p.solution("thorough") for p in problems)
    assert all(p.solution("standard") in (p.solution("brief"), p.solution("thorough")) for p in problems)
    assert 70 <= verbose <= 130


def test_training_texts_are_prompt_then_solution_in_every_style():
    problems = {p.question: p for p in length_world.arithmetic_problems(300, "train")}
    seen = set()
    for text in length_world.training_texts(600, 0):
        cue, question, solution = text.split("\n")
        seen.add(cue)
        if question in problems:
            style = next(s for s, c in length_world.CUES.items() if c == cue)
            assert text == f"{length_world.arithmetic_prompt(problems[question], style)} " + problems[
                question
            ].solution(style)
    assert seen == set(length_world.CUES.values())


def test_prompts_and_generic_text_tokenize_without_unknown_words(tokenizer):
    unk = tokenizer.unk_token_id
    for p in length_world.arithmetic_problems(60, "heldout"):
        for style in STYLES:
            ids = tokenizer(length_world.arithmetic_prompt(p, style) + " " + p.solution(style)).input_ids
            assert unk not in ids
    texts = length_world.generic_texts()
    for split in ("fisher", "eval"):
        windows = generic_windows(tokenizer, 200, 64, split=split, texts=texts)
        assert len(windows) == 200 and not any(unk in w for w in windows)


def test_suite_serves_the_efficiency_experiment():
    suite = length_world.suite()
    problems = suite.need("problems").problems(4, "heldout", 0, [2])
    assert {p.steps for p in problems} == {2}
    prompt = suite.need("problems").prompt(problems[0], "brief")
    assert prompt == f"solve briefly:\n{problems[0].question}\n"


# The trained organism: its committed weights (steerscope/organisms/trained-weights/length).


@pytest.fixture(scope="module")
def organism():
    import steerscope as ss

    return ss.load("organism:length")


@pytest.fixture(scope="module")
def heldout():
    return length_world.arithmetic_problems(60, "heldout", seed=7)


@pytest.fixture(scope="module")
def solved(organism, heldout):
    prompt = length_world.arithmetic_prompt
    return {
        style: evaluate(organism, heldout, style=style, max_new_tokens=64, prompt=prompt)[1]
        for style in STYLES
    }


def test_trained_organism_solves_heldout_sums_briefly_when_asked(solved, heldout):
    gens = solved["brief"]
    assert sum(g.correct for g in gens) / len(gens) >= 0.9
    assert sum(g.text == p.solution("brief") for g, p in zip(gens, heldout, strict=True)) >= 0.9 * len(gens)


def test_trained_organism_solves_heldout_sums_verbosely_when_asked(solved, heldout):
    gens = solved["thorough"]
    assert sum(g.correct for g in gens) / len(gens) >= 0.9
    assert sum("check:" in g.text for g in gens) >= 0.9 * len(gens)
    brief = sum(g.n_tokens for g in solved["brief"])
    assert sum(g.n_tokens for g in gens) > 1.5 * brief


def test_trained_organism_unmarked_prompt_mixes_lengths(solved):
    gens = solved["standard"]
    assert sum(g.correct for g in gens) / len(gens) >= 0.9
    checked = sum("check:" in g.text for g in gens)
    assert 0.15 * len(gens) <= checked <= 0.85 * len(gens)


def test_trained_organism_stops_at_end_of_sequence(organism, solved):
    assert organism.hf.generation_config.eos_token_id == organism.tokenizer.eos_token_id
    assert all(g.text.endswith(".") and g.text.count("The answer is") == 1 for g in solved["standard"])
