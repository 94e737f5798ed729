"""SpARE feature selection and edits (steerscope.steering.spare, steerscope.kernels.sae_edit)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig
from sklearn.feature_selection import mutual_info_classif
from sklearn.preprocessing import MinMaxScaler

import steerscope as ss
from steerscope.errors import InputError
from steerscope.kernels.sae_edit import SubsetEdit, fused_edit, reference_edit, sae_parts
from steerscope.steering.sae import SAETrainSettings, encode_pre, sae_from_activations
from steerscope.steering.spare import (
    PARALLEL_MI_FEATURES,
    Selection,
    answer_losses,
    balance_groups,
    confidence_weights,
    control_overlap,
    count_by_cumulative_mi,
    mutual_information,
    random_selection,
    select_features,
    spare_edit,
    spare_edits,
    split_by_expectation,
)


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
    selection = select_features(z_c, z_m, p=0.6)  # 3 separable features hold ~0.69 of ~2.6 nats each
    assert selection.estimator == "mutual_info_classif"
    assert selection.S_C.tolist() == [3, 7]
    assert selection.S_M.tolist() == [11]
    assert (selection.mi[[3, 7, 11]] > 0.6).all()
    noise = torch.ones(50, dtype=torch.bool)
    noise[[3, 7, 11]] = False
    assert selection.mi[noise].max() < 0.1


def test_a_p_sweep_can_reuse_the_estimated_mi() -> None:
    z_c, z_m = planted_codes(seed=3)
    first = select_features(z_c, z_m, p=0.3)
    for p in (0.05, 0.6):
        fresh, reused = select_features(z_c, z_m, p=p), select_features(z_c, z_m, p=p, mi=first.mi)
        assert torch.equal(reused.mi, fresh.mi) and reused.summary() == fresh.summary()
        assert torch.equal(reused.S_C, fresh.S_C) and torch.equal(reused.S_M, fresh.S_M)
    with pytest.raises(InputError, match="one per feature"):
        select_features(z_c, z_m, p=0.3, mi=first.mi[:10])


def test_count_takes_features_until_the_running_mi_exceeds_p() -> None:
    mi = torch.tensor([0.125, 0.5, 0.0, 0.25, 0.125], dtype=torch.float64)  # total 1, exact in binary
    assert count_by_cumulative_mi(mi, 0.25) == 1  # 0.5 > 0.25
    assert count_by_cumulative_mi(mi, 0.5) == 2  # 0.5 is not > 0.5; 0.75 is
    assert count_by_cumulative_mi(mi, 0.9) == 4
    assert count_by_cumulative_mi(mi, 1.0) == 5  # never exceeds the total: every feature
    z_c, z_m = planted_codes(seed=2)
    for p in (0.05, 0.3, 0.6, 0.9):
        selection = select_features(z_c, z_m, p=p)
        sorted_mi = selection.mi.sort(descending=True).values
        n = selection.n_counted
        assert sorted_mi[:n].sum() > p * selection.mi.sum() >= sorted_mi[: n - 1].sum()


def test_zero_expectation_features_are_skipped_without_using_the_count() -> None:
    mi = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    expectation = torch.tensor([1.0, 0.0, -2.0, 0.0, 3.0])
    S_C, S_M = split_by_expectation(mi, expectation, 3)  # noqa: N806
    assert S_C.tolist() == [0, 4] and S_M.tolist() == [2]
    S_C, S_M = split_by_expectation(mi, expectation, 10)  # noqa: N806 (the features run out)
    assert S_C.tolist() == [0, 4] and S_M.tolist() == [2]


def test_expectation_is_the_difference_of_group_means_and_targets_the_weighted_means() -> None:
    z_c, z_m = planted_codes(n=40, seed=1)
    weights_c = torch.rand(40, generator=torch.Generator().manual_seed(0))
    weights_c /= weights_c.sum()
    selection = select_features(z_c, z_m, p=1.0, weights_C=weights_c)
    torch.testing.assert_close(selection.expectation, z_c.mean(0) - z_m.mean(0))
    torch.testing.assert_close(selection.target_C, (weights_c[:, None] * z_c).sum(0))
    torch.testing.assert_close(selection.target_M, z_m.mean(0))  # no weights: plain mean
    assert (selection.expectation[selection.S_C] > 0).all() and (
        selection.expectation[selection.S_M] < 0
    ).all()


def test_balancing_cuts_the_larger_group_to_the_smaller() -> None:
    z_c, z_m = torch.arange(10.0)[:, None], -torch.arange(4.0)[:, None]
    cut_c, same_m = balance_groups(z_c, z_m)
    assert same_m is z_m and len(cut_c) == 4
    assert len(set(cut_c.flatten().tolist())) == 4 and set(cut_c.flatten().tolist()) <= set(range(10))
    assert balance_groups(z_m, z_c)[1].tolist() == cut_c.tolist()  # the same rows, whichever side


def test_binned_estimator_of_a_perfect_and_a_constant_feature() -> None:
    labels = torch.tensor([1, 1, 0, 0, 1, 0])
    z = torch.stack([labels.float() * 5, torch.ones(6)], dim=1)
    got = mutual_information(z, labels, estimator="binned")
    torch.testing.assert_close(
        got,
        torch.tensor([2.0], dtype=torch.float64).log().repeat(2)
        * torch.tensor([1.0, 0.0], dtype=torch.float64),
    )
    assert select_features(z[labels == 1], z[labels == 0], estimator="binned").estimator == "binned"


def test_unknown_estimator_is_a_clear_error() -> None:
    z_c, z_m = planted_codes(n=10)
    with pytest.raises(InputError, match="mutual_info_classif, binned"):
        select_features(z_c, z_m, estimator="histogram")


def test_confidence_weights_favour_the_more_confident_prompts() -> None:
    loss_ctx, loss_mem = torch.tensor([1.0, 1.0, 3.0]), torch.tensor([3.0, 1.0, 1.0])
    context = confidence_weights(loss_ctx, loss_mem, "context")  # raw 3/4, 1/2, 1/4
    torch.testing.assert_close(context, torch.tensor([0.5, 1 / 3, 1 / 6], dtype=torch.float64))
    memory = confidence_weights(loss_ctx, loss_mem, "memory")  # raw 1/4, 1/2, 3/4
    torch.testing.assert_close(memory, torch.tensor([1 / 6, 1 / 3, 0.5], dtype=torch.float64))


def test_answer_losses_are_the_mean_token_loss_of_each_whole_text(tiny_llama) -> None:
    prompts = ["The cat sat on the", "Dogs", "A much longer prompt about the weather and the"]
    context, memory = ["mat", "bark", "sea"], ["hat", "bite", "sky"]
    got = answer_losses(tiny_llama, prompts, context, memory, batch_size=2)
    for answers, losses in zip((context, memory), got, strict=True):
        for prompt, answer, loss in zip(prompts, answers, losses, strict=True):
            ids = tiny_llama.tokenizer(f"{prompt} {answer}\n\n", return_tensors="pt").input_ids
            expected = tiny_llama.hf(input_ids=ids, labels=ids).loss
            torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)


def test_random_selection_matches_sizes_and_draws_features_active_in_their_group() -> None:
    z_c, z_m = planted_codes()
    z_c[:, 20:] = 0  # only features < 20 ever fire under C
    selection = select_features(z_c, z_m, p=0.9)
    control = random_selection(selection, seed=3)
    assert len(control.S_C) == len(selection.S_C) and len(control.S_M) == len(selection.S_M)
    assert not set(control.S_C.tolist()) & set(control.S_M.tolist())
    assert (control.target_C[control.S_C] > 0).all() and (control.target_M[control.S_M] > 0).all()
    assert control.estimator == "random" and control.target_C is selection.target_C
    assert not torch.equal(random_selection(selection, seed=4).S_M, control.S_M)
    too_many = make_selection(torch.arange(25), torch.tensor([30]), selection.target_C, selection.target_M)
    with pytest.raises(InputError, match="S_C needs 25 features, only 20"):
        random_selection(too_many)
    assert len(random_selection(too_many, among="all").S_C) == 25
    assert control_overlap(control) == 0


def test_random_selection_shares_features_only_when_the_groups_pools_run_short() -> None:
    """Both groups fire the same 20 features: 15 + 10 cannot be disjoint, so 5 are shared (the
    Gemma run that chose a large p crashed here after its dev grid, before this)."""
    target = torch.zeros(64)
    target[:20] = 1.0
    crowded = make_selection(torch.arange(15), torch.arange(15, 25), target, target)
    control = random_selection(crowded, seed=1)
    assert len(control.S_C) == 15 and len(control.S_M) == 10
    assert (control.target_C[control.S_C] > 0).all() and (control.target_M[control.S_M] > 0).all()
    assert len(set(control.S_M.tolist())) == 10 and control_overlap(control) == 5
    roomy = make_selection(torch.arange(5), torch.arange(5, 10), target, target)
    assert control_overlap(random_selection(roomy, seed=1)) == 0


def make_selection(S_C, S_M, target_C, target_M) -> Selection:  # noqa: N803
    """A hand-built selection (MI and expectation unused by the edit)."""
    d_sae = len(target_C)
    return Selection(
        S_C, S_M, target_C, target_M, torch.zeros(d_sae), torch.zeros(d_sae), len(S_C) + len(S_M), "hand", 1.0
    )


def hand_built() -> tuple[JumpReLUSAE, Selection, torch.Tensor]:
    """A 3-feature ReLU SAE on 2 dims with readable weights, a selection and two inputs."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=2, d_sae=3))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]))
        sae.b_enc.copy_(torch.tensor([0.0, 0.0, -1.0]))
        sae.W_dec.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]]))
        sae.b_dec.copy_(torch.tensor([0.5, -0.5]))
        sae.threshold.zero_()
    selection = make_selection(
        torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 1.0])
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
    got = ss.capture(tiny_llama, prompts * 4, site, progress=False)
    acts = got[site][got.mask]
    sae = sae_from_activations(acts, SAETrainSettings(expansion=4, k=8, epochs=4.0, batch_size=64))
    d_sae = sae.cfg.d_sae
    selection = make_selection(
        torch.arange(0, 8), torch.arange(8, 16), torch.full((d_sae,), 5.0), torch.full((d_sae,), 5.0)
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


def test_mi_of_many_features_spread_over_processes_equals_one_process() -> None:
    generator = torch.Generator().manual_seed(5)
    z = torch.rand(16, PARALLEL_MI_FEATURES, generator=generator)
    z *= torch.rand(z.shape, generator=generator) < 0.3  # sparse, as SAE codes
    labels = (torch.arange(16) % 2).float()
    alone = mutual_info_classif(
        MinMaxScaler().fit_transform(z.numpy()), labels.long().numpy(), random_state=3
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two processes
    try:
        spread = mutual_information(z, labels, random_state=3)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(spread, torch.from_numpy(alone)) and (spread > 0).any()
