"""The reasoning world: sums solved inside `<think>`, extra checks and detours drawn per step,
held-out questions; and the trained `organism:reasoning` reasoning correctly on problems it never
saw while its sampled traces vary in length."""

from __future__ import annotations

import random
import re
import statistics
from collections import defaultdict

import pytest

from steerscope.data.arithmetic import STYLES, extract_answer
from steerscope.data.generic import generic_windows
from steerscope.errors import InputError
from steerscope.organisms import reasoning_world as world
from steerscope.organisms.filler import filler_texts
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.steering.generation import answer_part, count_tokens
from steerscope.steering.reasoning import evaluate_thinking
from steerscope.steering.seal import classify_thought, thought_counts

FACT = re.compile(r"(\d+) ([+-]) (\d+) = (\d+)")


def _right(a: str, op: str, b: str) -> int:
    return int(a) + int(b) if op == "+" else int(a) - int(b)


def _recompute(params: dict) -> int:
    value, i = params["start"], 1
    while f"op{i}" in params:
        value = _right(value, params[f"op{i}"], params[f"n{i}"])
        i += 1
    return value


def _question(text: str) -> str:
    return text.split("\n")[1]


@pytest.fixture(scope="module")
def texts():
    return world.training_texts(6000, 0)


@pytest.fixture(scope="module")
def tokenizer(texts):
    return word_tokenizer(texts + filler_texts(world.LEXICON, 300, "train/0"))


def test_problems_are_deterministic_and_cycle_through_steps():
    problems = world.arithmetic_problems(9, "train", seed=3)
    assert [p.steps for p in problems] == [2, 3, 4] * 3
    assert problems == world.arithmetic_problems(9, "train", seed=3)
    assert problems != world.arithmetic_problems(9, "train", seed=4)
    assert world.training_texts(50, 1) == world.training_texts(50, 1)
    assert world.training_texts(50, 1) != world.training_texts(50, 2)
    with pytest.raises(InputError, match="steps must be among"):
        world.arithmetic_problems(3, "train", steps=[5])


def test_heldout_questions_never_occur_in_training_texts_whatever_the_seeds():
    heldout = {p.question for s in range(3) for p in world.arithmetic_problems(100, "heldout", seed=s)}
    train = {p.question for s in range(3) for p in world.arithmetic_problems(100, "train", seed=s)}
    assert not heldout & train
    trained = {_question(text) for seed in (0, 1) for text in world.training_texts(6000, seed)}
    assert not heldout & trained
    assert train & trained  # the same kind of questions, so the check above can fail


def test_trace_length_varies_across_training_documents_of_one_question(texts, tokenizer):
    lengths: dict[str, set[int]] = defaultdict(set)
    for text in texts:
        if text.startswith(world.CUES["standard"] + "\n"):
            lengths[_question(text)].add(len(tokenizer(text).input_ids))
    repeated = [q for q, seen in lengths.items() if len(seen) > 1]
    assert len(repeated) >= 50
    # ...and the style is not fixed per question either: one question appears under several cues.
    cues: dict[str, set[str]] = defaultdict(set)
    for text in texts:
        cues[_question(text)].add(text.split("\n")[0])
    assert any(len(c) > 1 for c in cues.values())


def test_extra_thoughts_are_drawn_per_step_at_a_rate_drawn_per_document():
    rng = random.Random(0)
    start, steps = 10, [("+", 5), ("-", 3), ("+", 4)]
    extras = []
    for _ in range(600):
        thoughts = world.trace(start, steps, "standard", rng).split(world.THOUGHT_DELIMITER)[1:-1]
        position, counts = -1, [0, 0, 0]
        for thought in thoughts:
            if classify_thought(thought) == "step":
                position += 1
            elif "is wrong" not in thought:
                counts[position] += 1
        extras.append(counts)
    checked = [[n > 0 for n in counts] for counts in extras]
    for step in range(3):
        share = statistics.fmean(c[step] for c in checked)
        assert abs(share - statistics.fmean(world.CHECK_RATES)) < 0.07
    assert max(max(counts) for counts in extras) == 2
    # drawn step by step: many traces check some steps and not others...
    assert statistics.fmean(len(set(c)) > 1 for c in checked) > 0.3
    # ...but the document's rate persists: a check after the first step makes one after the last likelier
    first, last = statistics.fmean(c[0] for c in checked), statistics.fmean(c[2] for c in checked)
    assert statistics.fmean(c[0] and c[2] for c in checked) > first * last + 0.04


def test_every_trace_is_correct_and_every_wrong_step_is_corrected(texts):
    n_wrong = 0
    for text in texts:
        thoughts = text.split("<think>")[1].split("</think>")[0].split(world.THOUGHT_DELIMITER)[1:-1]
        for i, thought in enumerate(thoughts):
            facts = FACT.findall(thought)
            if "is wrong" in thought:
                continue
            for a, op, b, c in facts:
                if _right(a, op, b) != int(c):
                    n_wrong += 1
                    assert "is wrong" in thoughts[i + 1]
                    a2, op2, b2, c2 = FACT.findall(thoughts[i + 1])[-1]
                    assert (a2, op2, b2) == (a, op, b) and int(c2) == _right(a, op, b)
        expression = _question(text).removeprefix("what is ").removesuffix("?").split()
        value = int(expression[0])
        for op, number in zip(expression[1::2], expression[2::2], strict=True):
            value = _right(value, op, number)
            assert 0 <= value <= world.MAX_VALUE
        assert text.endswith(f"</think> The answer is {value}.")
        assert extract_answer(answer_part(text)) == value
    assert 0.01 * len(texts) < n_wrong < 0.12 * len(texts)


def test_cues_set_the_share_of_extra_thoughts(texts):
    extras = defaultdict(list)
    for text in texts:
        counts = thought_counts(text.split("<think>")[1], world.THOUGHT_DELIMITER)
        extras[text.split("\n")[0]].append((counts["check"] + counts["detour"]) / counts["step"])
    assert max(extras[world.CUES["brief"]]) == 0
    assert min(extras[world.CUES["thorough"]]) >= 1
    assert 0.5 < statistics.fmean(extras[world.CUES["standard"]]) < 1.0
    shares = {cue: len(v) / len(texts) for cue, v in extras.items()}
    assert shares[world.CUES["standard"]] > 0.7 and 0.05 < shares[world.CUES["brief"]] < 0.2


def test_written_solutions_answer_the_question_in_every_style():
    for p in world.arithmetic_problems(60, "heldout"):
        assert _recompute(p.params) == p.answer
        for style in STYLES:
            assert extract_answer(answer_part(p.solution(style))) == p.answer
            assert p.solution(style).startswith(world.THOUGHT_DELIMITER)
        assert thought_counts(p.solution("brief"), world.THOUGHT_DELIMITER) == {
            "step": p.steps,
            "check": 0,
            "detour": 0,
        }


def test_world_thoughts_are_classified_as_they_were_written():
    assert classify_thought(world.step_thought(12, "+", 5, 17)) == "step"
    assert classify_thought(world.check_thought(12, "+", 5, 17)) == "check"
    assert classify_thought(world.detour_thought(12, "+", 5, 2)) == "detour"
    assert classify_thought(world.correction_thought(12, "+", 5, 18)) == "check"
    assert world.detour_thought(12, "+", 5, 2) == "wait, another way: 12 + 2 = 14, 14 + 3 = 17."
    assert world.correction_thought(12, "+", 5, 18) == (
        "wait, check: 18 - 5 = 13, not 12, so 12 + 5 = 18 is wrong: 12 + 5 = 17."
    )


def test_think_tags_are_single_tokens_and_prompts_tokenize_as_prefixes(tokenizer):
    vocab = tokenizer.get_vocab()
    assert "<think>" in vocab and "</think>" in vocab
    unk = tokenizer.unk_token_id
    for p in world.arithmetic_problems(30, "heldout"):
        for style in STYLES:
            prompt = world.arithmetic_prompt(p, style)
            assert prompt.endswith("\n<think>")
            head = tokenizer(prompt).input_ids
            full = tokenizer(prompt + p.solution(style)).input_ids
            assert full[: len(head)] == head and unk not in full
            n_tokens, n_thinking = count_tokens(tokenizer, p.solution(style))
            assert n_tokens - n_thinking == 5  # " The answer is N ."
    for split in ("fisher", "eval"):
        windows = generic_windows(tokenizer, 100, 64, split=split, texts=world.generic_texts())
        assert not any(unk in w for w in windows)


def test_suite_serves_the_efficiency_experiment():
    problems = world.suite().need("problems")
    questions = problems.problems(4, "heldout", 0, [3])
    assert {p.steps for p in questions} == {3}
    assert problems.prompt(questions[0], "brief") == f"solve briefly:\n{questions[0].question}\n<think>"
    assert world.suite().need("text").texts() == world.generic_texts()


# The trained organism: its committed weights (steerscope/organisms/trained-weights/reasoning).


@pytest.fixture(scope="module")
def organism():
    import steerscope as ss

    return ss.load("organism:reasoning")


@pytest.fixture(scope="module")
def heldout():
    return world.arithmetic_problems(60, "heldout", seed=7)


def test_trained_organism_reasons_correctly_on_heldout_problems(organism, heldout):
    summary, samples = evaluate_thinking(
        organism, heldout, prompt=world.arithmetic_prompt, max_new_tokens=160
    )
    assert summary["accuracy"] >= 0.9
    assert all(g.text.count("</think>") == 1 for [g] in samples)
    assert organism.anatomy.n_layers == 6
    assert organism.tokenizer.convert_tokens_to_ids("</think>") != organism.tokenizer.unk_token_id


def test_trained_organism_sampled_traces_of_one_problem_vary_in_length(organism, heldout):
    problems = heldout[:12]
    _, samples = evaluate_thinking(
        organism,
        problems,
        prompt=world.arithmetic_prompt,
        n_samples=8,
        temperature=1.0,
        max_new_tokens=160,
        seed=3,
    )
    distinct = [len({g.n_thinking for g in gs}) for gs in samples]
    assert statistics.fmean(distinct) >= 3
    assert sum(g.correct for gs in samples for g in gs) / (8 * len(problems)) >= 0.85


def test_trained_organism_thinks_briefly_when_asked(organism, heldout):
    brief, _ = evaluate_thinking(organism, heldout, prompt=world.arithmetic_prompt, style="brief")
    careful, _ = evaluate_thinking(organism, heldout, prompt=world.arithmetic_prompt, style="thorough")
    assert brief["accuracy"] >= 0.9 and careful["accuracy"] >= 0.9
    assert brief["mean_thinking_tokens"] < 0.7 * careful["mean_thinking_tokens"]
