"""`steerscope run efficiency` on a reasoning model: every method tuned on dev problems and traced
on held-out ones (tiny random models with `<think>` tags; the harvest a random model cannot make
is stood in by written traces)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import steerscope.experiments.efficiency as efficiency
from steerscope.errors import InputError
from steerscope.organisms import ORGANISM_ATTRIBUTE
from steerscope.runner import run_experiment
from steerscope.steering.efficiency import Harvest, LengthPair
from steerscope.steering.generation import Generation
from steerscope.steering.layer_choice import spread_layers
from steerscope.tiny import tiny_model

THINK = ("<think>", "</think>")
PROBLEMS = str(Path(__file__).parent / "data" / "problems.jsonl")
QUICK = dict(
    quick=True, n_train=6, n_heldout=3, n_samples=2, n_eval_samples=2, max_new_tokens=8,
    thinking_strengths=[0.1, 0.2], delimiter_strengths=[1.0], layer_candidates=2, budget_shares=[0.5, 1.0],
)  # fmt: skip


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def harvested(monkeypatch) -> list:
    """Replaces the harvest with written traces (a step, then a check or not); records the
    problems it was given."""
    seen: list = []

    def written(
        model, problems, n_samples, temperature, max_new_tokens, batch_size, seed, prompt, progress, by
    ):
        assert by == "n_thinking"
        seen.extend(problems)
        assert all(prompt(p, "standard").endswith(f"{p.question}\n<think>") for p in problems)
        short = f"\n1 + 1 = 2.\n</think> The answer is {problems[0].answer}."
        long = f"\n1 + 1 = 2.\nwait, check: 2 - 1 = 1.\n</think> The answer is {problems[0].answer}."
        samples = [
            [Generation(short, 20, 12, p.answer, True), Generation(long, 40, 32, p.answer, True)]
            for p in problems
        ]
        pairs = [LengthPair(p, prompt(p, "standard"), short, long, 12, 32) for p in problems]
        counts = {"n_samples": 2 * len(problems), "n_correct": 2 * len(problems), "n_pairs": len(pairs)}
        return Harvest("thinking", pairs, counts, samples)

    monkeypatch.setattr(efficiency, "harvest_sampled", written)
    return seen


def reasoning_tiny():
    """A tiny model with `<think>` tags posing as organism:reasoning (its suite's prompts end in `<think>`)."""
    model = tiny_model("llama", extra_tokens=THINK)
    setattr(model.hf.config, ORGANISM_ATTRIBUTE, "reasoning_world")
    return model


def test_every_method_is_chosen_on_dev_and_traced_on_heldout(tmp_path, harvested):
    run_experiment("efficiency", tmp_path, model=reasoning_tiny(), **QUICK)
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["methods"] == ["efficiency", "seal", "budget"] and out["skipped"] == {}
    assert out["thought_delimiter"] == "\n" and out["layers"] == [1, 2]
    assert out["splits"] == {"harvest": 4, "dev": 2, "heldout": 3}
    assert {p.question for p in harvested}.isdisjoint({"dev"})  # harvest saw only its own problems
    assert len(harvested) == 4
    grid = out["dev_grid"]
    assert [(r["layer"], r["strength"]) for r in grid["efficiency"]] == [
        (1, 0.1),
        (1, 0.2),
        (2, 0.1),
        (2, 0.2),
    ]
    assert [(r["layer"], r["strength"]) for r in grid["seal"]] == [(1, 1.0), (2, 1.0)]
    length = out["dev_unsteered"]["mean_thinking_tokens"]
    budgets = sorted({max(2, round(share * length)) for share in (0.5, 1.0)})
    assert [r["budget"] for r in grid["budget"]] == budgets
    for method, rows in grid.items():
        chosen = [r for r in rows if r["chosen"]]
        assert len(chosen) <= 1
        expected = None if not chosen else {k: chosen[0][k] for k in ("layer", "strength", "budget", "style")}
        assert out["chosen"][method] == ({"method": method, **expected} if expected else None)
    frontier = out["frontier"]
    assert set(frontier) == {"unsteered", "efficiency", "seal", "budget"}
    for method, rows in frontier.items():
        for row in rows:
            assert row["n"] == 3 * 2
            lo, hi = row["accuracy_ci"]
            assert lo <= row["accuracy"] <= hi
            lo, hi = row["mean_thinking_ci"]
            assert lo <= row["mean_thinking_tokens"] <= hi
            if method != "unsteered":
                assert {
                    "thinking_change",
                    "thinking_change_ci",
                    "accuracy_change",
                    "accuracy_change_ci",
                } <= set(row)
    # Steering methods are traced at one layer over every strength; budgets hold on held-out problems.
    assert len({r["layer"] for r in frontier["efficiency"]}) == 1 and len(frontier["efficiency"]) == 2
    budget_rows = [r for r in frontier["budget"] if r["budget"] is not None]
    assert [r["budget"] for r in budget_rows] == budgets
    assert all(r["mean_thinking_tokens"] <= r["budget"] for r in budget_rows)
    assert frontier["budget"][-1]["method"] == "brevity cue" and frontier["budget"][-1]["style"] == "brief"
    assert set(out["target"]) == {"efficiency", "seal", "budget"}
    report = (tmp_path / "report.html").read_text()
    assert "Held-out accuracy against thinking length" in report and "Dev grid: seal" in report


def test_one_method_runs_alone(tmp_path, harvested):
    run_experiment(
        "efficiency", tmp_path, model=reasoning_tiny(), method="budget", **{**QUICK, "budget_shares": [0.5]}
    )
    out = json.loads((tmp_path / "results.json").read_text())
    assert out["methods"] == ["budget"] and set(out["frontier"]) == {"unsteered", "budget"}
    assert [r["method"] for r in out["frontier"]["budget"]] == ["budget", "brevity cue"]
    assert out["harvest"] is None and not harvested  # a budget needs no harvest


def test_user_problems_reach_the_harvest_dev_and_heldout_splits(tmp_path, harvested):
    settings = {**QUICK, "layer_candidates": 1}
    run_experiment(
        "efficiency", tmp_path, model=reasoning_tiny(), data={"problems": PROBLEMS}, method="seal", **settings
    )
    out = json.loads((tmp_path / "results.json").read_text())
    used = out["provenance"]["data"]["problems"]["used"]
    questions = {json.loads(line)["question"] for line in Path(PROBLEMS).read_text().splitlines()}
    assert {p.question for p in harvested} <= questions
    assert out["splits"]["harvest"] + out["splits"]["dev"] == used["train"]
    assert out["splits"]["heldout"] == used["heldout"]


def test_a_method_without_what_it_needs_is_skipped_and_said(tmp_path, monkeypatch):
    def nothing_correct(
        model, problems, n_samples, temperature, max_new_tokens, batch_size, seed, prompt, progress, by
    ):
        samples = [[Generation("\n1 + 1 = 3.\n</think> 3", 9, 6, 3, False)] for _ in problems]
        return Harvest("thinking", [], {"n_samples": len(problems), "n_correct": 0, "n_pairs": 0}, samples)

    monkeypatch.setattr(efficiency, "harvest_sampled", nothing_correct)
    run_experiment(
        "efficiency",
        tmp_path,
        model=reasoning_tiny(),
        **{**QUICK, "budget_shares": [0.5], "layer_candidates": 1},
    )
    out = json.loads((tmp_path / "results.json").read_text())
    assert "no concise/verbose pair" in out["skipped"]["efficiency"]
    assert "check/detour thoughts" in out["skipped"]["seal"]
    assert set(out["frontier"]) == {"unsteered", "budget"}
    with pytest.raises(InputError, match="no method could run"):
        run_experiment("efficiency", tmp_path / "seal", model=reasoning_tiny(), method="seal", **QUICK)


def test_seal_and_budget_need_a_think_close_token(tmp_path):
    for method in ("seal", "budget"):
        with pytest.raises(InputError, match="single </think> token"):
            run_experiment("efficiency", tmp_path / method, model="tiny:llama", method=method, **QUICK)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"method": "fastest"}, "method must be one of 'efficiency', 'seal', 'budget', 'all', got 'fastest'"),
        ({"efficiency_at": "answer"}, "efficiency_at must be one of 'thinking', 'delimiters', got 'answer'"),
        ({"dev_share": 1.0}, r"dev_share must be a finite number in \(0, 1\), got 1.0"),
        ({"budget_shares": [0.5, 0.0]}, "budget_shares must be a non-empty list of finite numbers > 0"),
    ],
)
def test_bad_settings_are_named_before_any_model_work(tmp_path, setting, message):
    with pytest.raises(InputError, match=message):
        run_experiment("efficiency", tmp_path, model="organism:not-built", **setting)


def test_dev_grid_layers_leave_out_the_first_and_last():
    assert spread_layers(6, 6, skip_first=True) == [1, 2, 3, 4]
    assert spread_layers(18, 3, skip_first=True) == [1, 9, 16]
    assert spread_layers(6, 1, skip_first=True) == [3]
    assert spread_layers(2, 4, skip_first=True) == [0, 1]
    assert spread_layers(2, 1, skip_first=True) == [1]  # at most k layers, even on two


def test_auto_thought_delimiter_is_a_blank_line_when_the_tokenizer_has_one():
    assert efficiency.thought_delimiter(tiny_model("llama").tokenizer, "auto") == "\n"
    assert efficiency.thought_delimiter(tiny_model("llama").tokenizer, "\n\n") == "\n\n"
