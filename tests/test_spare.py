"""SpARE feature selection and edits (steerscope.steering.spare, steerscope.kernels.sae_edit)."""

from __future__ import annotations

import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

import steerscope as ss
from steerscope.kernels.sae_edit import SubsetEdit, fused_edit, reference_edit, sae_parts
from steerscope.steering.sae import SAETrainSettings, encode_pre, token_activations, train_sae
from steerscope.steering.spare import Selection, mutual_information, select_features, spare_edit, spare_edits


def random_sae(d: int = 16, d_sae: int = 64, seed: int = 0, kind: str = "jumprelu") -> JumpReLUSAE | TopKSAE:
    """An SAE with random weights and biases (thresholds > 0 for JumpReLU)."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d, d_sae=d_sae, k=8, rescale_acts_by_decoder_norm=True))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d_sae))
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * (0.3 if name == "threshold" else 1))
        if kind != "topk":
            sae.threshold.abs_()
    return sae


def planted_codes(n: int = 200, d_sae: int = 50, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """z_C, z_M [n, d_sae] of noise, except features 3, 7 (high under C) and 11 (high under M)."""
    generator = torch.Generator().manual_seed(seed)
    z_c, z_m = torch.rand(n, d_sae, generator=generator), torch.rand(n, d_sae, generator=generator)
    z_c[:, [3, 7]] += 2.0
    z_m[:, 11] += 2.0
    return z_c, z_m


def test_mi_selection_recovers_planted_features() -> None:
    z_c, z_m = planted_codes()
    selection = select_features(z_c, z_m, p=0.75)  # 3 * log 2 of ~2.6 nats in all
    assert set(selection.S_C.tolist()) == {3, 7}
    assert selection.S_M.tolist() == [11]
    assert torch.allclose(selection.mi[[3, 7, 11]], torch.tensor(2.0).log().float(), atol=1e-6)


def test_selection_stops_at_fraction_p_of_total_mi() -> None:
    z_c, z_m = planted_codes()
    mi = mutual_information(torch.cat([z_c, z_m]), torch.cat([torch.ones(200), torch.zeros(200)]))
    sorted_mi = mi.sort(descending=True).values
    for p in (0.05, 0.3, 0.6, 1.0):
        selection = select_features(z_c, z_m, p=p)
        kept = len(selection.S_C) + len(selection.S_M)
        assert sorted_mi[:kept].sum() >= p * mi.sum() * (1 - 1e-6)
        assert sorted_mi[: kept - 1].sum() < p * mi.sum()


def test_mutual_information_of_a_perfect_and_a_constant_feature() -> None:
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    z = torch.stack([labels.float() * 5, torch.ones(6)], dim=1)
    torch.testing.assert_close(
        mutual_information(z, labels), torch.tensor([2.0]).log().repeat(2) * torch.tensor([1.0, 0.0])
    )


def test_selected_features_split_by_which_label_has_the_higher_mean() -> None:
    z_c, z_m = planted_codes(seed=1)
    selection = select_features(z_c, z_m, p=1.0)
    assert (selection.zbar_C[selection.S_C] > selection.zbar_M[selection.S_C]).all()
    assert (selection.zbar_C[selection.S_M] <= selection.zbar_M[selection.S_M]).all()
    torch.testing.assert_close(selection.zbar_C, z_c.mean(0))


def hand_built() -> tuple[JumpReLUSAE, Selection, torch.Tensor]:
    """A 3-feature ReLU SAE on 2 dims with readable weights, a selection and two inputs."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=2, d_sae=3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]))
        sae.b_dec.copy_(torch.tensor([0.5, -0.5]))
        sae.threshold.zero_()
    selection = Selection(
        S_C=torch.tensor([0]),
        S_M=torch.tensor([1, 2]),
        zbar_C=torch.tensor([2.0, 0.0, 0.0]),
        zbar_M=torch.tensor([0.0, 3.0, 1.0]),
        mi=torch.zeros(3),
    )
    h = torch.tensor([[3.5, 0.5], [0.5, 4.5]])  # z = [[3, 1, 1], [0, 5, 1.5]] (h - b_dec, then relu)
    return sae, selection, h


def run_on_last_token(edit, h: torch.Tensor) -> torch.Tensor:
    """Apply an edit to rows h [n, d] as n one-token prompts."""
    tokens = ss.TokenInfo(
        torch.zeros(len(h), 1, dtype=torch.long),
        torch.ones(len(h), 1, dtype=torch.bool),
        torch.ones(len(h), dtype=torch.long),
    )
    return edit(h[:, None, :], tokens)[:, 0]


def test_edit_towards_memory_equals_the_formula() -> None:
    sae, selection, h = hand_built()
    alpha = 1.5
    torch.testing.assert_close(encode_pre(sae, h), torch.tensor([[3.0, 1.0, 1.0], [0.0, 5.0, 1.5]]))
    # remove min(alpha*2, z0) of feature 0; add max(alpha*3 - z1, 0), max(alpha*1 - z2, 0)
    expected = torch.stack(
        [
            h[0]
            - 3.0 * torch.tensor([1.0, 0.0])
            + 3.5 * torch.tensor([0.0, 1.0])
            + 0.5 * torch.tensor([2.0, -1.0]),
            h[1] - 0.0 + 0.0 + 0.0,
        ]
    )
    for fused in (True, False):
        got = run_on_last_token(spare_edit(sae, selection, "memory", alpha, fused=fused), h)
        torch.testing.assert_close(got, expected)


def test_edit_towards_context_swaps_the_roles() -> None:
    sae, selection, h = hand_built()
    alpha = 1.5
    # remove min(alpha*3, z1) and min(alpha*1, z2); add max(alpha*2 - z0, 0) of feature 0
    expected = torch.stack(
        [
            h[0] - 1.0 * torch.tensor([0.0, 1.0]) - 1.0 * torch.tensor([2.0, -1.0]) + 0.0,
            h[1]
            - 4.5 * torch.tensor([0.0, 1.0])
            - 1.5 * torch.tensor([2.0, -1.0])
            + 3.0 * torch.tensor([1.0, 0.0]),
        ]
    )
    for fused in (True, False):
        got = run_on_last_token(spare_edit(sae, selection, "context", alpha, fused=fused), h)
        torch.testing.assert_close(got, expected)


def test_only_the_last_prompt_token_is_edited(tiny_llama) -> None:
    site = "L1.resid_post"
    prompts = ["The cat sat on the mat.", "Dogs bark.", "A much longer prompt about the weather today."]
    acts = token_activations(tiny_llama, prompts * 4, [site])[site]
    sae = train_sae(acts, SAETrainSettings(expansion=4, k=8, steps=20, batch_size=64))
    d_sae = sae.cfg.d_sae
    selection = Selection(
        S_C=torch.arange(0, 8),
        S_M=torch.arange(8, 16),
        zbar_C=torch.full((d_sae,), 5.0),
        zbar_M=torch.full((d_sae,), 5.0),
        mi=torch.zeros(d_sae),
    )
    plain = ss.capture(tiny_llama, prompts, site, progress=False)
    with ss.intervene(tiny_llama, spare_edits({site: sae}, {site: selection}, "memory", alpha=2.0)):
        steered = ss.capture(tiny_llama, prompts, site, progress=False)
    changed = (steered[site] - plain[site]).abs().amax(-1) > 1e-6
    last = plain.positions == plain.mask.sum(1, keepdim=True) - 1
    assert torch.equal(changed, last & plain.mask)


def test_fused_equals_reference() -> None:
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(32, 16, generator=generator) * 2
    for kind in ("jumprelu", "topk"):
        parts = sae_parts(random_sae(kind=kind))
        remove, add = torch.tensor([5, 1, 40, 17]), torch.tensor([2, 33, 60])
        target_remove, target_add = (
            torch.rand(4, generator=generator) * 3,
            torch.rand(3, generator=generator) * 3,
        )
        expected = reference_edit(parts, h, remove, add, target_remove, target_add)
        got = fused_edit(SubsetEdit.gather(parts, remove, add, target_remove, target_add), h)
        assert (expected - h).abs().max() > 0.1
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
