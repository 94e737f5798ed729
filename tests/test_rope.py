import json
import math

import pytest
import torch

import steerscope as ss
from steerscope.errors import InputError
from steerscope.probes.rope import (
    bos_alignment_sums,
    bos_attention_sums,
    bos_index,
    dimension_square_sums,
    dominant_pairs,
    massive_pairs,
    pair_cosines,
    rotary_stats,
    stats_change,
    vector_cosines,
)
from steerscope.rotary import fold_pairs, pair_frequencies, pair_norms, rotate

HEAD_DIM = 8
PAIRS = HEAD_DIM // 2


def rope_cos_sin(positions: list[int], base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [1, pos, head_dim] for the rotate-half layout, built by hand."""
    angles = torch.tensor(positions, dtype=torch.float64)[:, None] * pair_frequencies(base, HEAD_DIM)
    angles = torch.cat([angles, angles], dim=-1)[None]
    return angles.cos(), angles.sin()


def pair_angles(x: torch.Tensor) -> torch.Tensor:
    """Angle of each 2-D pair (x_i, x_{i+half}): [..., head_dim] -> [..., pairs]."""
    return torch.atan2(x[..., PAIRS:], x[..., :PAIRS])


def test_pair_norms_are_invariant_under_rope():
    torch.manual_seed(0)
    x = torch.randn(1, 5, 2, HEAD_DIM, dtype=torch.float64)
    rotated = rotate(x, *rope_cos_sin([0, 3, 7, 100, 2048]))
    assert torch.allclose(pair_norms(rotated), pair_norms(x))
    mask = torch.ones(1, 5, dtype=torch.bool)
    folded = fold_pairs(dimension_square_sums(rotated, mask)).sqrt()
    assert torch.allclose(folded, pair_norms(x).pow(2).sum(dim=(0, 1)).sqrt())
    assert not torch.allclose(dimension_square_sums(rotated, mask), dimension_square_sums(x, mask))


def test_pair_angles_after_rope_match_a_hand_rotation():
    torch.manual_seed(1)
    q, k = torch.randn(HEAD_DIM, dtype=torch.float64), torch.randn(HEAD_DIM, dtype=torch.float64)
    m, n = 9, 2  # query at position 9, key at position 2
    q_rot = rotate(q[None, None, None], *rope_cos_sin([m]))[0, 0, 0]
    k_rot = rotate(k[None, None, None], *rope_cos_sin([n]))[0, 0, 0]
    theta = pair_frequencies(10_000.0, HEAD_DIM)
    # rotate-half turns pair i counter-clockwise by position * theta_i
    assert torch.allclose(
        pair_angles(q_rot), torch.remainder(pair_angles(q) + m * theta + math.pi, 2 * math.pi) - math.pi
    )
    expected = torch.cos(pair_angles(q) - pair_angles(k) + (m - n) * theta)
    assert torch.allclose(pair_cosines(q_rot, k_rot), expected)


def test_angles_are_invariant_under_a_common_rotation():
    torch.manual_seed(2)
    q, k = (
        torch.randn(1, 4, 1, HEAD_DIM, dtype=torch.float64),
        torch.randn(1, 4, 1, HEAD_DIM, dtype=torch.float64),
    )
    cos, sin = rope_cos_sin([5, 17, 300, 4000])
    q_rot, k_rot = rotate(q, cos, sin), rotate(k, cos, sin)
    assert torch.allclose(pair_cosines(q_rot, k_rot), pair_cosines(q, k))
    assert torch.allclose(vector_cosines(q_rot, k_rot), vector_cosines(q, k))


def test_massive_pair_detection_finds_a_planted_pair():
    torch.manual_seed(3)
    x = torch.randn(2, 6, 3, HEAD_DIM)
    x[:, :, 1, 2] *= 40  # head 1, pair 2 (dims 2 and 6)
    x[:, :, 1, 2 + PAIRS] *= 40
    norms = fold_pairs(dimension_square_sums(x, torch.ones(2, 6, dtype=torch.bool))).sqrt()
    found = massive_pairs(norms, lam=3.0)
    assert found[1].nonzero().squeeze(1).tolist() == [2]
    assert not found[0].any() and not found[2].any()
    assert not massive_pairs(norms, lam=1000.0).any()


def test_padding_is_excluded_from_pair_norms():
    x = torch.randn(1, 4, 1, HEAD_DIM)
    x[0, :2] = 1e6  # left padding
    mask = torch.tensor([[False, False, True, True]])
    assert torch.allclose(dimension_square_sums(x, mask), (x[0, 2:].double() ** 2).sum(0))


def test_bos_is_found_under_left_padding():
    positions = torch.tensor([[-1, -1, 0, 1], [0, 1, 2, 3]])
    assert bos_index(positions).tolist() == [2, 0]


def test_bos_alignment_uses_each_rows_first_real_key_and_shared_kv_heads():
    torch.manual_seed(4)
    q = torch.randn(2, 4, 4, HEAD_DIM, dtype=torch.float64)
    k = torch.randn(2, 4, 2, HEAD_DIM, dtype=torch.float64)
    positions = torch.tensor([[-1, 0, 1, 2], [0, 1, 2, 3]])
    whole, per_pair, n = bos_alignment_sums(q, k, positions)
    assert n == 5
    expected_whole = torch.zeros(4, dtype=torch.float64)
    expected_pairs = torch.zeros(4, PAIRS, dtype=torch.float64)
    for row, bos, queries in ((0, 1, (2, 3)), (1, 0, (1, 2, 3))):
        for t in queries:
            for h in range(4):
                key = k[row, bos, h // 2]
                expected_whole[h] += torch.dot(q[row, t, h], key) / (q[row, t, h].norm() * key.norm())
                expected_pairs[h] += pair_cosines(q[row, t, h], key)
    assert torch.allclose(whole, expected_whole)
    assert torch.allclose(per_pair, expected_pairs)


def test_frequencies_use_each_layers_own_base(tiny_gemma):
    stats = rotary_stats(tiny_gemma, ["Anna puts the ball in the box."])
    anatomy = tiny_gemma.anatomy
    assert set(anatomy.rope_bases) == {10_000.0, 1_000_000.0}
    for layer, base in enumerate(anatomy.rope_bases):
        expected = torch.tensor([base ** (-2 * i / anatomy.head_dim) for i in range(anatomy.head_dim // 2)])
        assert torch.allclose(stats.frequencies[layer], expected.double())
    assert stats.q_pair_norm.shape == (anatomy.n_layers, anatomy.n_heads, anatomy.head_dim // 2)
    assert stats.k_pair_norm.shape == (anatomy.n_layers, anatomy.n_kv_heads, anatomy.head_dim // 2)
    entry = dominant_pairs(stats)[anatomy.layer_types.index("full_attention")]
    assert entry["rope_base"] == 1_000_000.0 and len(entry["k"]) == anatomy.n_kv_heads


def test_bos_attention_is_the_patterns_first_column_on_real_queries(tiny_gemma):
    prompts = ["Sally puts the ball in the basket.", "Anne moves it."]
    acts = ss.capture(tiny_gemma, prompts, ["L3.attn_pattern", "L0.attn_pattern"], batch_size=2)
    stats = rotary_stats(tiny_gemma, prompts, batch_size=2)
    for layer in (0, 3):
        total = torch.zeros(tiny_gemma.anatomy.n_heads, dtype=torch.float64)
        n = 0
        for prompt in prompts:  # unpadded, one at a time: BOS is column 0
            pattern = ss.capture(tiny_gemma, [prompt], [f"L{layer}.attn_pattern"])[f"L{layer}.attn_pattern"][
                0
            ]
            total += pattern[:, 1:, 0].double().sum(-1)
            n += pattern.shape[1] - 1
        assert torch.allclose(stats.bos_attention[layer], total / n, atol=1e-6)
        sums, count = bos_attention_sums(acts[f"L{layer}.attn_pattern"], acts.positions)
        assert count == n and torch.allclose(sums / count, total / n, atol=1e-6)


def test_stats_change_is_zero_against_itself_and_batches_add_up(tiny_gemma):
    prompts = ["one two three", "a much longer prompt than the first one", "x"]
    whole = rotary_stats(tiny_gemma, prompts, batch_size=3)
    batched = rotary_stats(tiny_gemma, prompts, batch_size=1)
    assert torch.allclose(whole.q_dim_sq, batched.q_dim_sq, rtol=1e-5)
    assert torch.allclose(whole.bos_pair_cos, batched.bos_pair_cos, atol=1e-5)
    change = stats_change(whole, whole)
    assert not change.q_pair_norm.any() and not change.bos_attention.any()


def test_quick_run_on_a_tiny_model_writes_the_documented_results(tmp_path, monkeypatch):
    from steerscope.runner import run_experiment

    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    model = ss.load("tiny:gemma3")
    half = model.anatomy.head_dim // 2
    with torch.no_grad():  # plant a massive pair 2 in every query head of layer 3: x(1 + 49)
        model.hf.model.layers[3].self_attn.q_norm.weight[[2, 2 + half]] = 49.0
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    run_experiment(
        "rope",
        tmp_path / "run",
        model=model,
        quick=True,
        sparsity=0.01,
        n_fisher=3,
        n_windows=2,
        n_tom=2,
    )
    after = model.hf.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    results = json.loads((tmp_path / "run" / "results.json").read_text())
    anatomy = model.anatomy
    assert set(results) >= {"dominant_pairs", "bos_attention", "qk_angle", "perturbation"}
    assert len(results["dominant_pairs"]) == anatomy.n_layers
    planted = results["dominant_pairs"][3]
    theta_2 = 1_000_000.0 ** (-2 * 2 / anatomy.head_dim)  # layer 3 is the global layer
    for head in planted["q"]:
        assert head["pairs"] == [2] and head["ratios"][0] > 5.0
        assert head["frequencies"] == pytest.approx([theta_2])
    assert results["dominant_by_layer_type"]["full_attention"]["q"] == {"2": anatomy.n_heads}
    assert len(results["bos_attention"]["before"]) == anatomy.n_layers
    assert len(results["qk_angle"]["before"]["pair_cos"][0][0]) == anatomy.head_dim // 2
    perturbation = results["perturbation"]
    assert perturbation["n_perturbed"] > 0
    for label in ("targeted", "random"):
        assert {"q_massive_rel_change", "q_other_rel_change", "bos_attention_abs_change"} <= set(
            perturbation[label]["summary"]
        )
    q_change = perturbation["targeted"]["changes"]["q_pair_norm"]
    assert len(q_change) == anatomy.n_layers and len(q_change[0]) == anatomy.n_heads
    assert len(perturbation["random"]["changes"]) == 1  # quick: one random seed
    assert "Plotly.newPlot" in (tmp_path / "run" / "report.html").read_text()


def test_config_errors_name_the_field():
    from steerscope.runner import get_experiment, make_config

    rope = get_experiment("rope")
    with pytest.raises(InputError, match=r"rope: sparsity must be a finite number in \(0, 1\], got 0.0"):
        make_config(rope, {"sparsity": 0.0})
    with pytest.raises(InputError, match="rope: random_seeds must be an integer >= 1, got 0"):
        make_config(rope, {"random_seeds": 0})
    with pytest.raises(InputError, match="rope: n_windows and n_tom are both 0; there is nothing to measure"):
        make_config(rope, {"n_windows": 0, "n_tom": 0})
