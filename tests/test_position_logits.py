import json
import math

import pytest
import torch

from steerscope.capture import capture
from steerscope.experiments import position_logits as _registers_the_experiment  # noqa: F401
from steerscope.probes.position_logits import (
    attention_layers,
    causal_allowed,
    fit_additive,
    logits_from_capture,
    pre_softmax_logits,
    two_way_fit,
    virtual_distance_logits,
)
from steerscope.runner import run_experiment

PROMPTS = ["The cat sat on the mat and looked around the room.", "Short one", "Abc def ghi jkl mno"]


def additive_logits(n: int, n_prompts: int, targets: int = 3, seed: int = 0) -> list[torch.Tensor]:
    """Exact sums a(i - j) + b(i) + c(j), a shared over prompts: [targets, n, n] each (float64)."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(targets, n, generator=generator, dtype=torch.float64)
    distance = (torch.arange(n)[:, None] - torch.arange(n)[None, :]).clamp(min=0)
    out = []
    for _ in range(n_prompts):
        b = torch.randn(targets, n, generator=generator, dtype=torch.float64)
        c = torch.randn(targets, n, generator=generator, dtype=torch.float64)
        out.append(a[:, distance] + b[:, :, None] + c[:, None, :])
    return out


@pytest.mark.parametrize("share_distance", [True, False])
def test_fit_of_an_exact_additive_sum_has_r_one_and_recovers_the_logits(share_distance):
    logits = additive_logits(24, n_prompts=4)
    masks = [causal_allowed(24, window=9 if p == 1 else None) for p in range(4)]
    fit = fit_additive(logits, masks, share_distance=share_distance)
    assert torch.allclose(fit.r, torch.ones(3, dtype=torch.float64), atol=1e-6)
    for real, fitted, mask in zip(logits, fit.fitted, masks, strict=True):
        assert torch.allclose(fitted[:, mask], real[:, mask], atol=1e-9)


def test_noise_lowers_r_to_the_expected_level():
    """With y = s + e, fitted = s + P e (P the hat matrix of rank dof over K cells), so
    r = sqrt((var s + var e * dof / K) / (var s + var e))."""
    n, n_prompts, sigma = 32, 8, 1.5
    signal = additive_logits(n, n_prompts, targets=4, seed=1)
    generator = torch.Generator().manual_seed(2)
    noisy = [s + sigma * torch.randn(s.shape, generator=generator, dtype=torch.float64) for s in signal]
    masks = [causal_allowed(n)] * n_prompts
    fit = fit_additive(noisy, masks)
    var_signal = torch.cat([s[:, m] for s, m in zip(signal, masks, strict=True)], dim=1).var(dim=1)
    expected = torch.sqrt((var_signal + sigma**2 * fit.dof / fit.n_observed) / (var_signal + sigma**2))
    assert (fit.r < 0.99).all()
    assert torch.allclose(fit.r, expected, atol=0.02)
    clean = fit_additive(signal, masks)
    assert (fit.r < clean.r).all()


def test_fit_ignores_cells_outside_the_causal_window():
    logits = additive_logits(16, n_prompts=2)
    masks = [causal_allowed(16, window=5)] * 2
    spoiled = [values.clone() for values in logits]
    for values, mask in zip(spoiled, masks, strict=True):
        values[:, ~mask] = 1e6  # future keys and keys outside the window
    fit = fit_additive(spoiled, masks)
    assert torch.allclose(fit.r, torch.ones(3, dtype=torch.float64), atol=1e-6)
    assert all((fitted[:, ~mask] == 0).all() for fitted, mask in zip(fit.fitted, masks, strict=True))


def test_causal_allowed_hides_future_keys_and_keys_beyond_the_window():
    allowed = causal_allowed(6, window=3)
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    assert torch.equal(allowed, (j <= i) & (i - j < 3))
    assert torch.equal(causal_allowed(6), j <= i)


def test_two_way_fit_of_a_complete_additive_table_is_exact():
    generator = torch.Generator().manual_seed(0)
    f = torch.randn(5, 7, 1, generator=generator, dtype=torch.float64)
    g = torch.randn(5, 1, 9, generator=generator, dtype=torch.float64)
    assert torch.allclose(two_way_fit(f + g), f + g, atol=1e-12)


@pytest.mark.parametrize("family", ["gemma3", "llama"])
def test_logits_from_captures_give_the_eager_attention_probabilities(family):
    from steerscope.tiny import tiny_model

    model = tiny_model(family)
    layers = range(model.anatomy.n_layers)
    sites = [f"L{layer}.{kind}" for layer in layers for kind in ("q_rope", "k_rope", "attn_pattern")]
    acts = capture(model, PROMPTS, sites)  # the longest prompt exceeds Gemma's tiny window of 8
    geometry = attention_layers(model)
    logits, allowed = logits_from_capture(acts, geometry, layers)
    for layer in layers:
        for p, keep in enumerate(acts.mask):
            pattern = acts[f"L{layer}.attn_pattern"][p][:, keep][:, :, keep]  # [head, query, key]
            assert torch.allclose(logits[layer][p].softmax(-1), pattern.double(), atol=1e-5)
            assert torch.equal(torch.isfinite(logits[layer][p][0]), allowed[layer][p])
    if family == "gemma3":
        assert [g.window for g in geometry] == [8, 8, 8, None]
        assert geometry[0].scaling == pytest.approx(16**-0.5)  # query_pre_attn_scalar^-0.5


def test_virtual_distance_table_at_the_true_distance_is_the_real_logit(tiny_gemma):
    acts = capture(
        tiny_gemma, PROMPTS[:1], [f"L{layer}.{k}" for layer in (0, 3) for k in ("q", "k", "q_rope", "k_rope")]
    )
    n = int(acts.mask[0].sum())
    for layer in attention_layers(tiny_gemma)[0::3]:
        q, k, q_rope, k_rope = (acts[f"L{layer.layer}.{kind}"][0] for kind in ("q", "k", "q_rope", "k_rope"))
        table = virtual_distance_logits(q, k, layer, range(n))  # [head, query, distance, key]
        real = pre_softmax_logits(q_rope, k_rope, layer)
        i, j = causal_allowed(n, layer.window).nonzero(as_tuple=True)
        assert torch.allclose(table[:, i, i - j, j], real[:, i, j], atol=1e-5)


def test_quick_run_on_a_tiny_model_writes_the_documented_results(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    run_experiment("position-logits", tmp_path / "run", model="tiny:gemma3", quick=True, n_prompts=3)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(results["per_head"]) == 4 * 4
    assert set(results["per_head"][0]) >= {"layer", "head", "r", "r_within_query", "virtual_r"}
    for key in ("median_r", "random_init_median_r", "random_init_virtual_median_r", "paper_r"):
        assert -1 <= results[key] <= 1 and not math.isnan(results[key])
    assert set(results["virtual"]) >= {"median_r", "median_r_by_layer", "distances"}
    assert len(results["median_r_by_layer"]) == 4
    assert results["config"]["window"] == 48  # the quick setting
    assert results["data"]["n_prompts"] == 3
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Plotly.newPlot" in html and "0.959" in html
