import json

import pytest
import torch

from steerscope.data.records import TomStory
from steerscope.data.tom import tom_mixture
from steerscope.errors import InputError
from steerscope.experiments.tom_sensitivity.config import default_sweep
from steerscope.prefix_cache import cache_all_but_last
from steerscope.probes.lm_metrics import cached_option_logprobs, continuation_logprobs
from steerscope.probes.tom_eval import greedy_first_words, tom_scores
from steerscope.probes.tom_fisher import tom_fisher_samples
from steerscope.runner import run_experiment
from steerscope.tiny import tiny_model


def test_tom_fisher_samples_count_only_the_answer(tiny_llama):
    items = tom_mixture("fisher", 4)
    for item, sample in zip(items, tom_fisher_samples(tiny_llama, items), strict=True):
        answer = tiny_llama.tokenizer(item.correct, add_special_tokens=False).input_ids
        assert sample.loss_mask.sum() == len(answer)
        assert sample.input_ids[sample.loss_mask].tolist() == answer
        assert sample.loss_mask[-len(answer) :].all()


def test_tom_scores_split_false_and_true_belief(tiny_llama):
    items = tom_mixture("eval", 8)
    scores = tom_scores(tiny_llama, items, batch_size=3)
    assert scores["n"] == 8
    for prefix in ("", "fb_", "tb_"):
        assert 0.0 <= scores[f"{prefix}acc"] <= 1.0
        assert 0.0 <= scores[f"{prefix}greedy_match"] <= 1.0
    n_fb = sum(item.false_belief for item in items)
    assert scores["acc"] == pytest.approx((scores["fb_acc"] * n_fb + scores["tb_acc"] * (8 - n_fb)) / 8)


def test_single_answer_items_score_exactly_as_correct_minus_foil(tiny_llama):
    items = tom_mixture("eval", 6)
    stories = [item.story for item in items]
    correct = continuation_logprobs(tiny_llama, stories, [item.correct for item in items], 4)
    foil = continuation_logprobs(tiny_llama, stories, [item.foil for item in items], 4)
    scores = tom_scores(tiny_llama, items, batch_size=4, greedy=False)
    assert scores["margin"] == pytest.approx((correct - foil).mean().item(), abs=1e-5)
    assert scores["acc"] == ((correct - foil) > 0).float().mean().item()
    assert set(scores["by_kind"]) == {"unexpected_transfer", "unexpected_contents"}


def test_several_answers_score_the_best_whole_continuation(tiny_llama):
    story = TomStory("Ann looks in the", (" red box", " box"), (" bag", " old bag"), True, "transfer")
    lp = continuation_logprobs(tiny_llama, [story.story] * 4, [" red box", " box", " bag", " old bag"])
    scores = tom_scores(tiny_llama, [story], greedy=False)
    assert scores["margin"] == pytest.approx((max(lp[0], lp[1]) - max(lp[2], lp[3])).item(), abs=1e-4)
    by_kind = scores["by_kind"]["transfer"]
    assert by_kind["n"] == 1 and by_kind["margin"] == scores["margin"]


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_stories_run_once_score_as_each_option_run_whole(family):
    """The cached path (llama) and the whole-story fallback (tiny gemma3's 8-token window cuts
    these stories) give each option's full-story score and the uncached greedy words."""
    model = tiny_model(family)
    items = tom_mixture("eval", 5) + [
        TomStory("Ann looks in the", (" red box", " box"), (" bag", " old bag", " cup"), True, "transfer")
    ]
    stories = [item.story for item in items]
    cached = cache_all_but_last(model, stories, 4, 4)
    assert (cached is None) == (family == "gemma3")
    scores = tom_scores(model, items, batch_size=4)
    best = [
        [max(continuation_logprobs(model, [item.story] * len(opts), list(opts)).tolist()) for opts in pair]
        for item in items
        for pair in [(item.answers, item.foils)]
    ]
    margins = torch.tensor([answer - foil for answer, foil in best])
    assert scores["margin"] == pytest.approx(margins.mean().item(), abs=1e-4)
    assert scores["acc"] == (margins > 0).float().mean().item()
    words = greedy_first_words(model, stories, batch_size=4)
    expected_match = [
        any(w == a.split()[0] for a in item.answers) for w, item in zip(words, items, strict=True)
    ]
    assert scores["greedy_match"] == pytest.approx(sum(expected_match) / len(items))


def test_cached_option_scores_equal_whole_continuations_on_gemma(gemma):
    """Gemma 3 270M's sliding layers and softcapped logits: the cached path (stories well inside
    the 512-token window) scores each option as the whole story would."""
    items = tom_mixture("eval", 3)
    stories = [item.story for item in items]
    options = [list(item.answers) + list(item.foils) for item in items]
    cached = cache_all_but_last(gemma, stories, 4, 2)
    assert cached is not None
    scores = cached_option_logprobs(gemma, cached, options)
    whole = continuation_logprobs(
        gemma, [s for s, row in zip(stories, options, strict=True) for _ in row], sum(options, [])
    )
    assert torch.allclose(torch.cat(scores), whole, atol=2e-3)
    assert [len(row) for row in scores] == [len(row) for row in options]


def test_option_scores_reject_what_they_cannot_score(tiny_llama, tiny_gemma):
    cached = cache_all_but_last(tiny_llama, ["a story", "another story"], 4, 2)
    with pytest.raises(InputError, match="2 cached prompts and options for 1"):
        cached_option_logprobs(tiny_llama, cached, [[" a"]])
    with pytest.raises(InputError, match="no answers or no foils"):
        tom_scores(tiny_llama, [TomStory("Ann looks in the", (" box",), (), True, "transfer")])
    short = cache_all_but_last(tiny_gemma, ["a b", "c d"], 1, 2)
    assert short is not None
    with pytest.raises(InputError, match="outgrows the 8-token sliding window"):
        cached_option_logprobs(tiny_gemma, short, [[" one two three four five six seven"], [" x"]])


def test_quick_run_on_a_tiny_model_writes_the_documented_results(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    outcome = run_experiment(
        "tom-sensitivity",
        tmp_path / "run",
        model="tiny:gemma3",
        quick=True,
        sparsities=[0.001, 0.01],
        n_eval_tom=12,  # tiny gemma3's 8-token window sends every story down the whole-story path
    )
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["baseline"]) >= {"tom_acc", "tom_margin", "ppl"}
    assert [s["sparsity"] for s in results["sweep"]] == [0.001, 0.01]
    assert all(set(s["generic_mask"]) >= {"n_perturbed", "tom_acc", "ppl"} for s in results["sweep"])
    assert results["config"]["n_fisher"] == 24  # the rest of the quick setting still applies
    assert results["config"]["n_eval_tom"] == 12
    for step in results["sweep"]:
        assert set(step) >= {"sparsity", "n_perturbed", "tom_acc", "tom_margin", "ppl", "random"}
        assert set(step["random"]) >= {"tom_acc", "tom_margin", "ppl"}
    counts = results["mask_distribution"]["0.01"]["by_layer_and_kind"]
    assert sum(sum(v) for v in counts.values()) == results["sweep"][1]["n_perturbed"]
    assert results["sweep"][1]["n_perturbed"] > 0
    pairs = results["mask_distribution"]["0.01"]["rotary_pair"]
    assert len(pairs["q"]) == 8  # tiny head_dim 16
    assert sum(pairs["q"]) == sum(counts["q"]) and sum(pairs["k"]) == sum(counts["k"])
    assert "Plotly.newPlot" in (tmp_path / "run" / "report.html").read_text()
    # the Fisher scores were cached, one verified folder per text set (beside each, its builders' lock)
    cached = [p for p in (tmp_path / "cache" / "fisher").iterdir() if p.suffix != ".lock"]
    assert len(cached) == 2 and all(p.is_dir() for p in cached)
    assert outcome.results["sweep"][0]["n_perturbed"] >= 0


def test_weights_are_restored_after_the_sweep(tmp_path, monkeypatch):
    import steerscope as ss

    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    model = ss.load("tiny:llama")
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    run_experiment("tom-sensitivity", tmp_path / "run", model=model, quick=True, sparsities=[0.01])
    after = model.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_default_sweep_is_the_papers_on_gemma_and_scaled_up_on_small_models(gemma, tiny_llama):
    assert default_sweep(gemma) == pytest.approx([1e-6, 3e-6, 1e-5, 3e-5, 1e-4])
    assert default_sweep(gemma, quick=True) == pytest.approx([1e-5, 1e-4])
    # Tiny llama: median linear matrix 64 x 64 = 4096 entries; 5 of them need a headline of 1e-2.
    assert default_sweep(tiny_llama) == pytest.approx([1e-3, 3e-3, 1e-2, 3e-2, 1e-1])


def test_a_mask_that_selects_nothing_takes_the_baseline_without_evaluating(tiny_llama, monkeypatch):
    from steerscope.experiments.tom_sensitivity import phases
    from steerscope.experiments.tom_sensitivity.config import TomSensitivityConfig

    params = dict(tiny_llama.hf.named_parameters())
    names = tiny_llama.anatomy.linear_weights().values()
    generator = torch.Generator().manual_seed(0)
    fisher = tuple({n: torch.rand(params[n].shape, generator=generator) for n in names} for _ in range(2))
    calls = []

    def weight_sum(model, items, windows):  # stands in for the ToM and perplexity evaluation
        calls.append(1)
        return {"weights": float(sum(params[n].double().sum() for n in names))}

    monkeypatch.setattr(phases, "_evaluate", weight_sum)
    config = TomSensitivityConfig(sparsities=[1e-9, 0.01], random_seeds=2)
    sweep = phases.sweep_masks(config, tiny_llama, fisher, phases.Evaluation([], []))
    empty, full = sweep.rows
    assert empty["n_perturbed"] == 0 and empty["generic_mask"]["n_perturbed"] == 0
    assert empty["weights"] == empty["generic_mask"]["weights"] == sweep.baseline["weights"]
    assert empty["random"]["weights"] == sweep.baseline["weights"] and empty["random"]["weights_sd"] == 0
    assert full["n_perturbed"] > 0 and full["weights"] != sweep.baseline["weights"]
    assert len(calls) == 1 + (2 + config.random_seeds)  # the baseline, then the 0.01 masks only
