"""Efficiency steering on reasoning models: pairing by thinking tokens, the thinking part,
intervals over problems, paired changes and the dev-split choice rule."""

from __future__ import annotations

import pytest
import torch

from steerscope.capture import capture
from steerscope.data.arithmetic import arithmetic_problems
from steerscope.errors import InputError
from steerscope.steering import efficiency
from steerscope.steering.choice import fewest_within_tolerance
from steerscope.steering.efficiency import Harvest, LengthPair, pair_by_length
from steerscope.steering.generation import Generation, thinking_part
from steerscope.steering.reasoning import paired_change, problem_intervals, thinking_directions
from steerscope.steering.thinking import delimiter_activations
from steerscope.tiny import tiny_model


def gen(n_tokens: int, n_thinking: int | None, correct: bool = True) -> Generation:
    return Generation("", n_tokens, n_thinking, 1 if correct else 0, correct)


def test_pairing_by_thinking_tokens_can_differ_from_pairing_by_all_tokens():
    gens = [gen(10, 8), gen(12, 3), gen(30, 9), gen(5, 2, correct=False)]
    short, long = pair_by_length(gens, by="n_thinking")
    assert (short.n_thinking, long.n_thinking) == (3, 9)
    short, long = pair_by_length(gens)
    assert (short.n_tokens, long.n_tokens) == (10, 30)
    assert pair_by_length([gen(10, 4), gen(12, 4)], by="n_thinking") is None
    with pytest.raises(InputError, match="by: unknown"):
        pair_by_length(gens, by="n_words")


def test_one_harvest_pairs_by_the_length_it_is_given(monkeypatch):
    short = Generation("\nab\n</think> The answer is 1.\nmore words after the answer", 30, 4, 1, True)
    long = Generation("\nab\nwait\nab\n</think> 1", 12, 9, 1, True)
    monkeypatch.setattr(efficiency, "generate_solutions", lambda *args, **kwargs: [[short, long]])
    model, problems = (
        tiny_model("llama", extra_tokens=("<think>", "</think>")),
        arithmetic_problems(1, "train"),
    )
    thinking = efficiency.harvest_sampled(model, problems, n_samples=2, by="n_thinking")
    [pair] = thinking.pairs
    assert (pair.concise, pair.verbose) == ("\nab\n</think>", "\nab\nwait\nab\n</think>")  # thinking only
    assert (pair.concise_tokens, pair.verbose_tokens) == (4, 9)
    assert thinking.variant == "thinking" and thinking.counts["mean_thinking_tokens"] == 6.5
    assert thinking.samples == [[short, long]]
    tokens = efficiency.harvest_sampled(model, problems, n_samples=2)
    [pair] = tokens.pairs
    assert (pair.concise_tokens, pair.verbose_tokens) == (12, 30)  # by all tokens the order turns
    assert tokens.variant == "sampled" and tokens.counts["n_problems_solved"] == 1
    with pytest.raises(InputError, match="by: unknown"):
        efficiency.harvest_sampled(model, problems, by="n_words")
    with pytest.raises(InputError, match="</think>"):
        efficiency.harvest_sampled(tiny_model("llama"), problems, by="n_thinking")


def test_thinking_part_keeps_the_tokens_count_tokens_counts():
    assert thinking_part("\n1 + 1 = 2.\n</think> The answer is 2.") == "\n1 + 1 = 2.\n</think>"
    assert thinking_part("\n1 + 1 =") == "\n1 + 1 ="


def test_intervals_resample_problems_and_cover_the_point_estimate():
    samples = [[gen(9, 6), gen(9, 10)], [gen(9, 20, correct=False), gen(9, 4)], [gen(9, 8), gen(9, 8)]]
    out = problem_intervals(samples, n_boot=500, seed=1)
    lo, hi = out["accuracy_ci"]
    assert lo <= 5 / 6 <= hi and lo < hi
    lo, hi = out["mean_thinking_ci"]
    assert lo < 56 / 6 < hi
    assert out == problem_intervals(samples, n_boot=500, seed=1)
    certain = problem_intervals([[gen(9, 5)], [gen(9, 5)]], n_boot=200)
    assert certain == {"accuracy_ci": [1.0, 1.0], "mean_thinking_ci": [5.0, 5.0]}
    with pytest.raises(InputError, match="every problem"):
        problem_intervals([[gen(9, 5)], []])


def test_paired_change_measures_accuracy_gap_and_relative_thinking():
    base = [[gen(9, 10)], [gen(9, 20)], [gen(9, 30, correct=False)], [gen(9, 40)]]
    half = [[gen(9, 5)], [gen(9, 10)], [gen(9, 15)], [gen(9, 20, correct=False)]]
    out = paired_change(base, half, n_boot=300)
    assert out["thinking_change"] == pytest.approx(-0.5)
    assert out["thinking_change_ci"] == pytest.approx([-0.5, -0.5])
    assert out["accuracy_change"] == pytest.approx(0.0)
    lo, hi = out["accuracy_change_ci"]
    assert lo < 0 < hi
    same = paired_change(base, base, n_boot=100)
    assert same["accuracy_change_ci"] == [0.0, 0.0] and same["thinking_change"] == 0.0
    with pytest.raises(InputError, match="same problems"):
        paired_change(base, half[:2])


def test_dev_choice_takes_fewest_thinking_tokens_within_the_accuracy_tolerance():
    rows = [
        {"accuracy": 0.95, "mean_thinking_tokens": 40.0},
        {"accuracy": 0.94, "mean_thinking_tokens": 30.0},
        {"accuracy": 0.80, "mean_thinking_tokens": 10.0},
        {"accuracy": 0.93, "mean_thinking_tokens": 25.0},
        {"accuracy": 0.90, "mean_thinking_tokens": 20.0},
    ]
    unsteered, steered = rows[0], rows[1:]
    assert (
        fewest_within_tolerance(unsteered, steered, tolerance=0.02) == 2
    )  # the 0.80 and 0.90 rows lose too much
    assert fewest_within_tolerance(unsteered, steered, tolerance=0.2) == 1
    assert fewest_within_tolerance(unsteered, rows[2:3], tolerance=0.02) is None
    longer = {"accuracy": 0.95, "mean_thinking_tokens": 41.0}
    assert fewest_within_tolerance(unsteered, [longer], tolerance=0.02) is None


PAIRS = [
    ("q<think>", "\nab\n</think>1", "\nab\nwait\nab\n</think>1"),
    ("qq<think>", "\ncd\n</think>2", "\nwait\ncd\nwait\n</think>2"),
]


@pytest.fixture(scope="module")
def think_model():
    return tiny_model("llama", extra_tokens=("<think>", "</think>"))


def _harvest() -> Harvest:
    problem = arithmetic_problems(1, "train")[0]
    return Harvest("thinking", [LengthPair(problem, p, c, v, 0, 0) for p, c, v in PAIRS])


def _trace_means(model, traces, site, positions):
    """Per trace: the mean activation over the chosen absolute positions of its tokens."""
    full = capture(model, [p + c for p, c in traces], site, progress=False)
    out = []
    for row, (prompt, _) in enumerate(traces):
        acts = full[site][row][full.mask[row]]
        ids = full.token_ids[row][full.mask[row]].tolist()
        out.append(acts[positions(model, prompt, ids)].mean(0))
    return torch.stack(out)


def _thinking_tokens(model, prompt, ids):
    start = len(model.tokenizer(prompt).input_ids)
    return list(range(start, len(ids)))


def _delimiters(model, prompt, ids):
    start = len(model.tokenizer(prompt).input_ids)
    close = ids.index(model.tokenizer.convert_tokens_to_ids("</think>"))
    newline = model.tokenizer.convert_tokens_to_ids("\n")
    return [i for i in range(start, close) if ids[i] == newline]


@pytest.mark.parametrize(("read", "positions"), [("thinking", _thinking_tokens), ("delimiters", _delimiters)])
def test_thinking_directions_average_each_trace_then_the_pairs(think_model, read, positions):
    vectors = thinking_directions(think_model, _harvest(), [1, 2], read=read, delimiter="\n")
    assert sorted(vectors) == [1, 2] and vectors[2].provenance["read"] == read
    for layer in (1, 2):
        site = f"L{layer}.resid_post"
        concise = _trace_means(think_model, [(p, c) for p, c, _ in PAIRS], site, positions)
        verbose = _trace_means(think_model, [(p, v) for p, _, v in PAIRS], site, positions)
        expected = concise.mean(0) - verbose.mean(0)
        torch.testing.assert_close(vectors[layer].directions[site], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError, match="read: unknown"):
        thinking_directions(think_model, _harvest(), [1], read="answer")


def test_delimiter_activations_give_each_delimiter_and_the_thought_after_it(think_model):
    [trace] = delimiter_activations(
        think_model, [(PAIRS[0][0], PAIRS[0][2])], ["L0.resid_post", "L3.mlp_out"], "\n"
    )
    assert trace.thoughts == ["ab", "wait", "ab", ""]
    assert {k: tuple(v.shape) for k, v in trace.activations.items()} == {
        "L0.resid_post": (4, think_model.anatomy.d_model),
        "L3.mlp_out": (4, think_model.anatomy.d_model),
    }
