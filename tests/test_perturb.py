import pytest
import torch

import steerscope as ss
from steerscope.errors import InputError


def _state(model):
    return {k: v.clone() for k, v in model.hf.state_dict().items()}


def test_perturb_sets_entries_and_restores_bit_exactly(tiny_llama):
    name = "model.layers.1.self_attn.q_proj.weight"
    weight = dict(tiny_llama.hf.named_parameters())[name]
    before = _state(tiny_llama)
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[3, 5] = mask[7, 0] = True
    mean = weight.mean().item()
    with ss.perturb(tiny_llama, {name: (mask, lambda selected, w: w.mean())}):
        assert torch.allclose(weight[mask], torch.full((2,), mean))
        assert torch.equal(weight[~mask], before[name][~mask])
    after = _state(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_perturb_restores_on_exception(tiny_llama):
    name = "model.layers.0.mlp.down_proj.weight"
    before = _state(tiny_llama)
    mask = torch.rand_like(dict(tiny_llama.hf.named_parameters())[name]) < 0.1
    with pytest.raises(RuntimeError, match="boom"):
        with ss.perturb(tiny_llama, {name: (mask, 0.0)}):
            raise RuntimeError("boom")
    after = _state(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_perturb_restores_entries_already_set_when_a_later_edit_is_bad(tiny_llama):
    good = "model.layers.0.mlp.up_proj.weight"
    before = _state(tiny_llama)
    mask = torch.ones_like(dict(tiny_llama.hf.named_parameters())[good], dtype=torch.bool)
    with pytest.raises(InputError, match="no parameter"):
        with ss.perturb(tiny_llama, {good: (mask, 0.0), "model.layers.0.mlp.nope.weight": (mask, 0.0)}):
            pass
    after = _state(tiny_llama)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_perturb_rejects_wrong_mask_shape(tiny_llama):
    with pytest.raises(
        InputError,
        match=r"bool tensor \(or nested list of true/false\) of shape \(128, 64\), got torch.bool \(3,\)",
    ):
        with ss.perturb(
            tiny_llama, {"model.layers.0.mlp.up_proj.weight": (torch.ones(3, dtype=torch.bool), 0.0)}
        ):
            pass
