import math
import weakref
from collections.abc import Mapping

import pytest
import torch
import torch.nn.functional as F

from steerscope.errors import InputError
from steerscope.probes import fisher
from steerscope.probes.fisher import LossSample, cached_fisher_scores, fisher_scores
from steerscope.probes.masks import (
    mask_counts,
    mean_replacement,
    random_masks,
    sensitive_mask_pair,
    sensitive_masks,
    top_k_mask,
)


def _samples(vocab: int) -> list[LossSample]:
    """Three samples of different lengths: two ToM-style (answer token only), one generic window."""
    generator = torch.Generator().manual_seed(0)
    ids = [torch.randint(4, vocab, (n,), generator=generator) for n in (9, 12, 7)]
    tom_a = torch.zeros(9, dtype=torch.bool)
    tom_a[-1] = True
    tom_b = torch.zeros(12, dtype=torch.bool)
    tom_b[[-2, -1]] = True
    return [LossSample(ids[0], tom_a), LossSample(ids[1], tom_b), LossSample.all_positions(ids[2])]


def _hand_gradients(model, sample: LossSample, names: list[str]) -> list[torch.Tensor]:
    """d(mean CE over counted tokens)/dW, written out from full logits without steerscope helpers."""
    params = dict(model.hf.named_parameters())
    logits = model.hf(input_ids=sample.input_ids[None]).logits[0]  # [seq, vocab]
    counted = sample.loss_mask[1:]
    loss = F.cross_entropy(logits[:-1][counted], sample.input_ids[1:][counted])
    return list(torch.autograd.grad(loss, [params[n] for n in names]))


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.hf.state_dict().items()}


def test_fisher_is_sum_of_per_sample_squared_gradients_not_squared_batch_gradient(tiny_llama):
    samples = _samples(len(tiny_llama.tokenizer))
    names = list(tiny_llama.anatomy.linear_weights().values())
    per_sample = [_hand_gradients(tiny_llama, s, names) for s in samples]

    scores = fisher_scores(tiny_llama, samples, progress=False)

    for i, name in enumerate(names):
        expected = sum(g[i].square() for g in per_sample)
        squared_batch = sum(g[i] for g in per_sample).square()
        assert torch.allclose(scores[name], expected, rtol=1e-4, atol=1e-12), name
        assert not torch.allclose(scores[name], squared_batch, rtol=1e-2), name


def test_fisher_scores_only_the_seven_linear_maps_of_every_layer(tiny):
    samples = _samples(len(tiny.tokenizer))[:1]
    scores = fisher_scores(tiny, samples, progress=False)
    params = dict(tiny.hf.named_parameters())
    assert len(scores) == 7 * tiny.anatomy.n_layers
    assert set(scores) == set(tiny.anatomy.linear_weights().values())
    for name, score in scores.items():
        assert score.dtype == torch.float32 and score.shape == params[name].shape
        assert (score >= 0).all() and score.sum() > 0


def test_fisher_restores_requires_grad_and_mode_and_writes_no_grad(tiny_llama):
    params = dict(tiny_llama.hf.named_parameters())
    params["model.embed_tokens.weight"].requires_grad_(False)
    params["model.layers.2.mlp.up_proj.weight"].requires_grad_(False)
    tiny_llama.hf.train()
    flags = {n: p.requires_grad for n, p in params.items()}

    scores = fisher_scores(tiny_llama, _samples(len(tiny_llama.tokenizer)), progress=False)

    assert scores["model.layers.2.mlp.up_proj.weight"].sum() > 0  # scored although frozen by the user
    assert {n: p.requires_grad for n, p in params.items()} == flags
    assert tiny_llama.hf.training
    assert all(p.grad is None for p in params.values())


def test_fisher_restores_requires_grad_when_a_sample_fails(tiny_llama):
    params = dict(tiny_llama.hf.named_parameters())
    params["model.norm.weight"].requires_grad_(False)
    flags = {n: p.requires_grad for n, p in params.items()}
    bad = LossSample.all_positions(torch.tensor([1, 5, 10_000, 6]))  # token id beyond the vocabulary
    with pytest.raises(IndexError):
        fisher_scores(tiny_llama, [*_samples(len(tiny_llama.tokenizer)), bad], progress=False)
    assert {n: p.requires_grad for n, p in params.items()} == flags
    assert not tiny_llama.hf.training


def test_loss_sample_rejects_masks_that_count_nothing_or_the_first_token():
    ids = torch.tensor([1, 5, 6])
    with pytest.raises(InputError, match="selects no token"):
        LossSample(ids, torch.zeros(3, dtype=torch.bool))
    with pytest.raises(InputError, match=r"loss_mask\[0\]"):
        LossSample(ids, torch.ones(3, dtype=torch.bool))
    with pytest.raises(InputError, match="bool tensor"):
        LossSample(ids, torch.ones(3))


def test_cache_returns_identical_scores_without_recomputing_and_keys_separate_files(
    tiny_llama, tmp_path, monkeypatch
):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    samples = _samples(len(tiny_llama.tokenizer))
    first = cached_fisher_scores(tiny_llama, samples, {"dataset": "tom"}, progress=False)
    files = list((tmp_path / "fisher").glob(f"*/{fisher.SCORES_FILE}"))
    assert len(files) == 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(fisher, "fisher_scores", must_not_run)
    monkeypatch.setattr(fisher, "batched_fisher_scores", must_not_run)
    second = cached_fisher_scores(tiny_llama, samples, {"dataset": "tom"}, progress=False)
    assert second.keys() == first.keys()
    assert all(torch.equal(first[n], second[n]) for n in first)

    monkeypatch.undo()
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    cached_fisher_scores(tiny_llama, samples, {"dataset": "generic"}, progress=False)
    cached_fisher_scores(tiny_llama, samples[:2], {"dataset": "tom"}, progress=False)
    files = list((tmp_path / "fisher").glob(f"*/{fisher.SCORES_FILE}"))
    assert len(files) == 3
    left = sorted(p.name for p in (tmp_path / "fisher").iterdir())
    assert left == sorted([f.parent.name for f in files] + [f.parent.name + ".lock" for f in files])


def test_cache_key_tells_apart_models_with_the_same_config():
    from steerscope.tiny import tiny_model

    assert fisher.model_fingerprint(tiny_model("llama", seed=0)) != fisher.model_fingerprint(
        tiny_model("llama", seed=1)
    )


def test_top_k_mask_is_empty_when_ties_fill_the_top_k():
    scores = torch.tensor([5.0, 5.0, 5.0, 1.0])
    assert not top_k_mask(scores, 0.25).any()  # k = 1, k-th largest = 5, nothing is > 5


def test_top_k_mask_keeps_only_entries_strictly_above_the_kth_largest():
    scores = torch.tensor([[9.0, 5.0], [5.0, 1.0]])
    assert torch.equal(top_k_mask(scores, 0.5), torch.tensor([[True, False], [False, False]]))


def test_top_k_mask_uses_floor_of_fraction_times_numel():
    scores = torch.arange(10.0)
    assert not top_k_mask(scores, 0.19).any()  # k = 1: at most k - 1 = 0 entries
    assert torch.equal(top_k_mask(scores, 0.35), scores > 7)  # k = 3, 3rd largest = 7
    assert torch.equal(top_k_mask(scores, 1.0), scores > 0)  # k = numel: all but the minimum


@pytest.mark.parametrize("fraction", [-0.01, 1.01, math.nan, "0.1"])
def test_top_k_mask_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(InputError, match=r"fraction must be a number in \[0, 1\]"):
        top_k_mask(torch.arange(4.0), fraction)


def test_sensitive_mask_is_tom_top_k_and_not_generic_top_k_per_matrix():
    tom = {
        "a": torch.tensor([[8.0, 7.0, 6.0, 5.0], [4.0, 3.0, 2.0, 1.0]]),  # top (k=4): indices 0, 1, 2
        "b": torch.tensor([4e-6, 3e-6, 2e-6, 1e-6]),  # tiny scale: its own threshold still selects index 0
    }
    generic = {
        "a": torch.tensor([[0.0, 9.0, 1.0, 8.0], [7.0, 2.0, 3.0, 4.0]]),  # top (k=4): indices 1, 3, 4
        "b": torch.tensor([1.0, 2.0, 3.0, 4.0]),  # top (k=2): index 3
    }
    result = sensitive_masks(tom, generic, 0.5)
    assert torch.equal(result["a"], torch.tensor([[True, False, True, False], [False, False, False, False]]))
    assert torch.equal(result["b"], torch.tensor([True, False, False, False]))
    for name in tom:
        expected = top_k_mask(tom[name], 0.5) & ~top_k_mask(generic[name], 0.5)
        assert torch.equal(result[name], expected)
    masks, mirror = sensitive_mask_pair(tom, generic, 0.5)
    assert all(torch.equal(masks[name], result[name]) for name in tom)
    swapped = sensitive_masks(generic, tom, 0.5)
    assert all(torch.equal(mirror[name], swapped[name]) for name in tom)
    assert torch.equal(mirror["a"], torch.tensor([[False, False, False, True], [True, False, False, False]]))


class _LazyScores(Mapping):
    """Scores made on access, counting how many of them are alive at once."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], seed: int, counter: dict[str, int]) -> None:
        self.shapes, self.seed, self.counter = shapes, seed, counter

    def __getitem__(self, name: str) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + len(name))
        tensor = torch.rand(self.shapes[name], generator=generator)
        self.counter["alive"] += 1
        self.counter["peak"] = max(self.counter["peak"], self.counter["alive"])
        weakref.finalize(tensor, self._release)
        return tensor

    def _release(self) -> None:
        self.counter["alive"] -= 1

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)


def test_sensitive_masks_hold_one_matrix_of_each_score_set_at_a_time():
    shapes = {f"m{i}": (40 + i, 30) for i in range(6)}
    counter = {"alive": 0, "peak": 0}
    tom, generic = _LazyScores(shapes, 0, counter), _LazyScores(shapes, 100, counter)

    masks = sensitive_masks(tom, generic, 0.1)

    assert list(masks) == list(shapes)
    assert 1 <= counter["peak"] <= 2  # one tom and one generic matrix; scores are never pooled
    assert counter["alive"] == 0


def test_sensitive_masks_reject_mismatched_matrices():
    with pytest.raises(InputError, match="different matrices"):
        sensitive_masks({"a": torch.ones(2)}, {"b": torch.ones(2)}, 0.5)


def test_random_masks_match_per_matrix_counts_and_depend_only_on_seed():
    generator = torch.Generator().manual_seed(0)
    reference = {
        "a": torch.rand(30, 40, generator=generator) < 0.1,
        "b": torch.rand(50, generator=generator) < 0.3,
        "c": torch.zeros(5, 5, dtype=torch.bool),
    }
    first = random_masks(reference, seed=0)
    for name, mask in reference.items():
        assert first[name].shape == mask.shape and first[name].dtype == torch.bool
        assert int(first[name].sum()) == int(mask.sum())
    assert mask_counts(first) == mask_counts(reference) == sum(int(m.sum()) for m in reference.values())
    again = random_masks(dict(reversed(list(reference.items()))), seed=0)
    assert all(torch.equal(first[n], again[n]) for n in reference)
    other = random_masks(reference, seed=1)
    assert not torch.equal(first["a"], other["a"])
    assert not torch.equal(first["a"], reference["a"])


def _two_matrix_masks(model) -> dict[str, torch.Tensor]:
    params = dict(model.hf.named_parameters())
    generator = torch.Generator().manual_seed(3)
    names = ["model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"]
    return {n: torch.rand(params[n].shape, generator=generator) < 0.2 for n in names}


def test_mean_replacement_sets_exactly_masked_entries_to_matrix_mean_and_restores(tiny_llama):
    chosen = _two_matrix_masks(tiny_llama)
    params = dict(tiny_llama.hf.named_parameters())
    before = _state(tiny_llama)
    with mean_replacement(tiny_llama, chosen):
        for name, mask in chosen.items():
            weight, original = params[name], before[name]
            assert torch.equal(weight[mask], original.mean().expand(int(mask.sum())))
            assert torch.equal(weight[~mask], original[~mask])
        untouched = "model.layers.1.mlp.up_proj.weight"
        assert torch.equal(params[untouched], before[untouched])
    after = _state(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_mean_replacement_with_scale_shrinks_toward_the_mean(tiny_llama):
    chosen = _two_matrix_masks(tiny_llama)
    params = dict(tiny_llama.hf.named_parameters())
    before = _state(tiny_llama)
    with mean_replacement(tiny_llama, chosen, scale=0.5):
        for name, mask in chosen.items():
            mu = before[name].mean()
            assert torch.allclose(params[name][mask], mu + 0.5 * (before[name][mask] - mu))


def test_mean_replacement_restores_bit_exactly_on_exception(tiny_llama):
    chosen = _two_matrix_masks(tiny_llama)
    before = _state(tiny_llama)
    with pytest.raises(RuntimeError, match="boom"):
        with mean_replacement(tiny_llama, chosen):
            raise RuntimeError("boom")
    after = _state(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)
