"""Efficiency steering: the arithmetic data, answer extraction, pairing, thinking tokens, and a
quick run of the experiment on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

import steerscope.experiments.efficiency  # noqa: F401  (registers "efficiency")
from steerscope.data.arithmetic import (
    DEMONSTRATIONS,
    STYLES,
    arithmetic_problems,
    extract_answer,
    few_shot_prompt,
)
from steerscope.organisms import ORGANISM_ATTRIBUTE
from steerscope.runner import run_experiment
from steerscope.steering.build import example_activations
from steerscope.steering.efficiency import (
    efficiency_vector,
    harvest_prompt_contrast,
    harvest_sampled,
    pair_activations,
    pair_by_length,
)
from steerscope.steering.generation import (
    Generation,
    Setting,
    count_tokens,
    generate_solutions,
    solve_in_settings,
    truncate_solution,
)
from steerscope.steering.layer_choice import best_layer, evaluate, spread_layers, steering_effects
from steerscope.steering.vector import Fingerprint, SteeringVector
from steerscope.tiny import tiny_model

# Each template's answer, recomputed from its parameters independently of the generator.
RECOMPUTE = {
    "buy_more": lambda p: p["a"] + p["b"],
    "spend": lambda p: p["a"] - p["b"],
    "boxes": lambda p: p["a"] * p["b"],
    "buy_change": lambda p: p["bill"] - p["count"] * p["price"],
    "share_eat": lambda p: p["total"] / p["friends"] - p["eaten"],
    "give_buy": lambda p: p["a"] - p["b"] + p["c"],
    "two_items": lambda p: p["n1"] * p["p1"] + p["n2"] * p["p2"],
    "sell_pack": lambda p: (p["total"] - p["sold"]) / p["boxes"] + p["added"],
    "save_share": lambda p: (p["weekly"] * p["weeks"] - p["spent"]) / 2,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" 3 + 5 = 8. The answer is 8.", 8),
        ("The answer is 12. Then 99 more words 7", 12),
        ("so 20 - 12 = 8", 8),
        ("the answer is: 1,250 dollars", 1250),
        ("The answer is 4. Later the answer is 6.", 6),
        ("we get -3", -3),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_answer_prefers_the_answer_is_then_last_number(text, expected):
    assert extract_answer(text) == expected


def test_problem_answers_match_their_parameters_and_solutions():
    problems = arithmetic_problems(90, "train") + arithmetic_problems(30, "heldout") + list(DEMONSTRATIONS)
    assert {p.kind for p in problems} == set(RECOMPUTE)
    for p in problems:
        assert RECOMPUTE[p.kind](p.params) == p.answer, p.question
        assert isinstance(p.answer, int) and p.answer > 0
        for style in STYLES:
            assert p.solution(style).endswith(f"The answer is {p.answer}.")
            assert extract_answer(p.solution(style)) == p.answer
        assert len(p.solution("brief")) < len(p.solution("standard")) < len(p.solution("thorough"))


def test_problems_cycle_through_difficulties_and_are_deterministic():
    problems = arithmetic_problems(9, "train", seed=3)
    assert [p.steps for p in problems] == [1, 2, 3] * 3
    assert problems == arithmetic_problems(9, "train", seed=3)
    assert problems != arithmetic_problems(9, "train", seed=4)
    assert {p.steps for p in arithmetic_problems(6, "train", steps=[2])} == {2}


def test_train_and_heldout_splits_are_disjoint_across_seeds():
    train = {p.question for s in range(3) for p in arithmetic_problems(150, "train", seed=s)}
    heldout = {p.question for s in range(3) for p in arithmetic_problems(50, "heldout", seed=s)}
    assert not train & heldout
    assert not {d.question for d in DEMONSTRATIONS} & (train | heldout)


def test_prompt_styles_differ_only_in_instruction_and_demonstrations():
    problem = arithmetic_problems(1, "heldout")[0]
    prompts = {s: few_shot_prompt(problem, s) for s in STYLES}
    for prompt in prompts.values():
        assert prompt.endswith(f"Question: {problem.question}\nAnswer:")
    assert len(prompts["brief"]) < len(prompts["standard"]) < len(prompts["thorough"])


def _gen(n_tokens: int, correct: bool) -> Generation:
    return Generation(f"x{n_tokens}", n_tokens, None, 1 if correct else 0, correct)


def test_pairing_takes_shortest_and_longest_correct_solution():
    generations = [_gen(30, True), _gen(5, False), _gen(12, True), _gen(80, False), _gen(44, True)]
    concise, verbose = pair_by_length(generations)
    assert (concise.n_tokens, verbose.n_tokens) == (12, 44)


def test_pairing_needs_two_correct_solutions_of_different_length():
    assert pair_by_length([_gen(10, True), _gen(3, False)]) is None
    assert pair_by_length([_gen(10, True), _gen(10, True)]) is None
    assert pair_by_length([]) is None


def test_truncation_stops_at_blank_line_or_next_question():
    assert (
        truncate_solution(" 3 + 5 = 8. The answer is 8.\n\nQuestion: more") == " 3 + 5 = 8. The answer is 8."
    )
    assert truncate_solution(" 8.\nQuestion: next") == " 8."
    assert truncate_solution("\n\n 8. The answer is 8.") == "\n\n 8. The answer is 8."
    assert truncate_solution("<think>a\n\nb</think> 8.\n\nQ", thinking=True) == "<think>a\n\nb</think> 8."


def test_thinking_tokens_counted_until_think_close():
    model = tiny_model("llama", extra_tokens=("<think>", "</think>"))
    total, thinking = count_tokens(model.tokenizer, "<think>ab</think> 7")
    assert (total, thinking) == (6, 4)  # <think> a b </think> | " " 7
    assert count_tokens(model.tokenizer, "<think>abc") == (4, 4)  # not closed: all thinking
    assert count_tokens(tiny_model("llama").tokenizer, "ab 7") == (4, None)


def test_generation_counts_thinking_tokens_with_a_think_model():
    model = tiny_model("llama", extra_tokens=("<think>", "</think>"))
    [[sample]] = generate_solutions(model, ["Question: 1 + 1?\nAnswer:"], [2], max_new_tokens=6)
    assert sample.n_thinking is not None and sample.n_thinking <= sample.n_tokens
    [[plain]] = generate_solutions(tiny_model("llama"), ["Question: 1 + 1?\nAnswer:"], [2], max_new_tokens=6)
    assert plain.n_thinking is None


def test_pipeline_runs_unchanged_on_a_think_model():
    model = tiny_model("llama", extra_tokens=("<think>", "</think>"))
    harvest = harvest_prompt_contrast(model, arithmetic_problems(3, "train"), "written")
    vector, scores = efficiency_vector(model, harvest)
    assert vector.provenance["variant"] == "prompt_contrast" and len(scores) == model.anatomy.n_layers
    summary, generations = evaluate(model, arithmetic_problems(2, "heldout"), vector, 0.1, max_new_tokens=4)
    assert summary["n"] == 2 and summary["mean_thinking_tokens"] <= summary["mean_tokens"]


def test_quick_experiment_on_tiny_model_writes_documented_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    run_experiment(
        "efficiency",
        tmp_path / "run",
        model="tiny:llama",
        quick=True,
        n_train=4,
        n_heldout=2,
        n_samples=2,
        max_new_tokens=4,
        strengths=[0.0, 0.1],
        min_pairs=3,
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    for key in ("baseline", "prompted_brevity"):
        assert {"accuracy", "mean_tokens", "n"} <= set(results[key])
        assert results[key]["n"] == 2
    assert [s["strength"] for s in results["sweep"]] == [0.0, 0.1]
    for row in results["sweep"]:
        assert {"strength", "layer", "accuracy", "mean_tokens"} <= set(row)
    assert results["sweep"][0]["mean_tokens"] == results["baseline"]["mean_tokens"]
    # A random model solves nothing: the harvest falls back to the prompt contrast, and says so.
    assert results["variant"] == "prompt_contrast" and results["fallback"]
    assert results["harvest_attempts"][0]["variant"] == "sampled"
    assert results["harvest"]["n_pairs"] >= 3
    assert "mean_thinking_tokens" not in results["baseline"]
    assert [e["layer"] for e in results["layer_effects"]] == [None, 0, 1, 2]  # the last is never tried
    assert results["layer"] in (0, 1, 2)
    assert (tmp_path / "run" / "report.html").is_file()


def test_every_harvest_and_evaluation_builds_its_prompts_with_the_given_function():
    asked = []

    def prompt(problem, style):
        asked.append(style)
        return f"{style}: {problem.question}\n"

    model, problems = tiny_model("llama"), arithmetic_problems(2, "train")
    harvest_sampled(model, problems, 2, 0.8, 2, prompt=prompt)
    assert asked == ["standard"] * 2
    written = harvest_prompt_contrast(model, problems, "written", prompt=prompt)
    assert [p.prompt for p in written.pairs] == [f"standard: {p.question}\n" for p in problems]
    asked.clear()
    harvest_prompt_contrast(model, problems, "model", max_new_tokens=2, prompt=prompt)
    evaluate(model, problems, style="brief", max_new_tokens=2, prompt=prompt)
    assert asked == ["standard"] * 2 + ["brief"] * 2 + ["thorough"] * 2 + ["brief"] * 2


def test_experiment_takes_problems_and_prompts_from_the_model_suite(tmp_path):
    model = tiny_model("llama")
    setattr(model.hf.config, ORGANISM_ATTRIBUTE, "length_world")  # poses as organism:length
    run_experiment(
        "efficiency",
        tmp_path / "run",
        model=model,
        quick=True,
        n_train=3,
        n_heldout=2,
        n_samples=2,
        max_new_tokens=3,
        strengths=[0.0, 0.1],
        min_pairs=2,
        variant="prompt_contrast",
        contrast_completions="written",
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    pair = results["example_pairs"][0]
    assert pair["question"].startswith("what is") and "check:" in pair["verbose"]
    assert "check:" not in pair["concise"]
    assert all(row["question"].startswith("what is") for row in results["generations"])


def test_candidate_layers_spread_from_first_to_last_but_one():
    assert spread_layers(4, 6) == [0, 1, 2]
    assert spread_layers(18, 6) == [0, 3, 6, 10, 13, 16]
    assert spread_layers(18, 1) == [8]
    assert spread_layers(1, 3) == [0]


def test_layer_choice_takes_fewest_tokens_per_correct_answer():
    row = dict(strength=0.2, accuracy=1.0, mean_tokens=0.0)
    effects = [
        {**row, "layer": None, "tokens_per_correct": 10.0},
        {**row, "layer": 0, "tokens_per_correct": 30.0},
        {**row, "layer": 1, "tokens_per_correct": None},
        {**row, "layer": 2, "tokens_per_correct": 12.0},
    ]
    assert best_layer(effects) == 2
    assert best_layer([{**e, "tokens_per_correct": None} for e in effects]) == 0


def test_steering_effects_give_an_unsteered_row_then_one_per_layer():
    model = tiny_model("llama")
    harvest = harvest_prompt_contrast(model, arithmetic_problems(3, "train"), "written")
    effects = steering_effects(model, harvest, [0, 2], 0.5, n_problems=2, max_new_tokens=3)
    assert [(e["layer"], e["strength"], e["n"]) for e in effects] == [
        (None, 0.0, 2),
        (0, 0.5, 2),
        (2, 0.5, 2),
    ]


def test_settings_sharing_one_call_give_the_solutions_of_each_setting_alone():
    """Unsteered, steered (two layers, two signs) and differently prompted rows in one generate
    call per batch, each style's prompts sharing their own prefix: each setting's solutions are
    those of its own plain batch."""
    model = tiny_model("llama")
    problems = arithmetic_problems(3, "train")
    instruction = {"standard": "Add them.", "brief": "Add them, briefly, and then stop."}

    def prompt(problem, style):
        return f"{instruction[style]} 1 + 1 = 2. 2 + 3 = 5.\nQ: {problem.question[-30:]}\nA:"

    directions = torch.randn(2, model.anatomy.d_model, generator=torch.Generator().manual_seed(3))
    vectors = [
        SteeringVector({f"L{layer}.resid_post": direction}, Fingerprint.of(model))
        for layer, direction in zip((0, 2), directions, strict=True)
    ]
    settings = [
        Setting(),
        Setting(vectors[0], 1.0),
        Setting(vectors[0], -2.0),
        Setting(vectors[1], 2.0),
        Setting(vectors[0], 0.0),
        Setting(style="brief"),
        Setting(vectors[0], 1.0, "brief"),
    ]
    length = dict(max_new_tokens=6, batch_size=2)  # batches of 2 and 1 problems, 7 settings each
    together = solve_in_settings(model, problems, settings, prompt, **length)
    alone = [
        generate_solutions(
            model,
            [prompt(p, s.style) for p in problems],
            [p.answer for p in problems],
            vector=s.vector,
            strength=s.strength,
            share_prefix=False,
            **length,
        )
        for s in settings
    ]
    texts = [[g.text for g in gs] for gs in together]
    assert texts == [[gs[0].text for gs in solutions] for solutions in alone]
    # steering, its sign and (steered) the style show; strength 0 does not
    assert texts[1] != texts[0] and texts[2] not in (texts[0], texts[1]) and texts[6] != texts[1]
    assert texts[4] == texts[0]


def test_layer_trial_and_vector_read_one_capture_of_the_pairs():
    """`pair_activations` are each pair's completion-mean residuals; given them, the layer trial's
    directions and the vector with its layer scores are those of their own captures, and the
    vector runs no forward pass."""
    model = tiny_model("llama")
    harvest = harvest_prompt_contrast(model, arithmetic_problems(4, "train"), "written")
    activations = pair_activations(model, harvest)
    concise = example_activations(
        model, [(p.prompt, p.concise) for p in harvest.pairs], ["L1.resid_post"], "completion_mean"
    )
    torch.testing.assert_close(activations[0]["L1.resid_post"], concise["L1.resid_post"])
    assert set(activations[1]) == {f"L{layer}.resid_post" for layer in range(model.anatomy.n_layers)}
    vector, scores = efficiency_vector(model, harvest)
    calls = []
    handle = model.hf.model.embed_tokens.register_forward_hook(lambda *args: calls.append(1))
    try:
        shared_vector, shared_scores = efficiency_vector(model, harvest, activations=activations)
    finally:
        handle.remove()
    assert calls == []
    assert [s["layer"] for s in shared_scores] == [s["layer"] for s in scores]
    for mine, theirs in zip(shared_scores, scores, strict=True):
        assert mine == pytest.approx(theirs, abs=1e-5)
    assert vector.sites == shared_vector.sites
    site = str(vector.sites[0])
    torch.testing.assert_close(shared_vector.directions[site], vector.directions[site])
    length = dict(n_problems=2, max_new_tokens=3)
    effects = steering_effects(model, harvest, [0, 2], 0.5, **length)
    assert steering_effects(model, harvest, [0, 2], 0.5, activations=activations, **length) == effects
