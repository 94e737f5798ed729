"""steerscope edits and captures agree across plain transformers, nnsight, TransformerBridge and
HookedTransformer, on tiny random llama and gemma3 models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import warnings

import pytest
import torch
from torch import Tensor

from steerscope import capture, intervene
from steerscope.errors import InputError
from steerscope.interop import bridge_from, hooked_transformer_edits, hooked_transformer_from
from steerscope.model import Model
from steerscope.sites import SITE_KINDS
from steerscope.tiny import tiny_model
from steerscope.tokens import TokenInfo

FAMILIES = ["llama", "gemma3"]
PROMPTS = ["hello there, general", "hi", "the quick brown fox"]

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)


def adder(seed: int = 0, scale: float = 3.0):
    """An edit adding one fixed random vector over the last axis at every token."""

    def add(act: Tensor, tokens: TokenInfo) -> Tensor:
        vector = torch.randn(act.shape[-1], generator=torch.Generator().manual_seed(seed)) * scale
        return act + vector.to(act.dtype)

    return add


def prompt_ids(model: Model) -> Tensor:
    return model.tokenizer(["hello there, general kenobi"], return_tensors="pt").input_ids


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def bridges() -> dict[str, tuple[Model, object]]:
    """One tiny model and a bridge booted from (a copy of) it, per family."""
    built = {}
    for name in FAMILIES:
        model = tiny_model(name)
        built[name] = (model, bridge_from(model))
    return built


@pytest.fixture(scope="module")
def hooked() -> dict[str, tuple[Model, object]]:
    """One tiny model and a HookedTransformer with its weights, per family."""
    built = {}
    for name in FAMILIES:
        model = tiny_model(name)
        built[name] = (model, hooked_transformer_from(model))
    return built


# --- nnsight -------------------------------------------------------------------------------


def test_capture_through_nnsight_model_equals_plain_model(family):
    from nnsight import TransformersModel

    model = tiny_model(family)
    sites = ["L1.resid_post", "L1.q_rope"]
    plain = capture(model, PROMPTS, sites, progress=False)
    lm = TransformersModel(model.hf, tokenizer=model.tokenizer, task="text-generation")
    wrapped = capture(lm, PROMPTS, sites, progress=False)
    for site in sites:
        torch.testing.assert_close(wrapped[site], plain[site], rtol=0, atol=1e-6)
    assert torch.equal(wrapped.mask, plain.mask)


def test_intervene_is_active_inside_nnsight_trace(family):
    from nnsight import TransformersModel

    model = tiny_model(family)
    ids = prompt_ids(model)
    edits = {"L1.resid_post": adder()}
    with torch.no_grad():
        unedited = model.hf(ids).logits
        with intervene(model, edits):
            expected = model.hf(ids).logits
    lm = TransformersModel(model.hf, tokenizer=model.tokenizer, task="text-generation")
    with torch.no_grad(), intervene(lm, edits):
        with lm.trace(ids):
            logits = lm.output.logits.save()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert (logits - unedited).abs().max() > 1e-2


def test_intervene_is_active_inside_nnsight_generate(family):
    from nnsight import TransformersModel

    model = tiny_model(family)
    ids = prompt_ids(model)
    edits = {"L1.resid_post": adder(scale=8.0)}
    settings = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    with torch.no_grad():
        unedited = model.hf.generate(ids, **settings)
        with intervene(model, edits):
            expected = model.hf.generate(ids, **settings)
    lm = TransformersModel(model.hf, tokenizer=model.tokenizer, task="text-generation")
    with torch.no_grad(), intervene(lm, edits):
        generated = lm.generate(ids, **settings)
    assert torch.equal(generated.cpu(), expected)
    assert not torch.equal(expected, unedited)


# --- TransformerBridge ---------------------------------------------------------------------


def test_bridge_from_leaves_the_model_untouched():
    model = tiny_model("gemma3")
    keys = list(model.hf.state_dict())
    layer_type = type(model.hf.model.layers[0])
    attention = model.hf.config._attn_implementation
    bridge_from(model)
    assert list(model.hf.state_dict()) == keys
    assert type(model.hf.model.layers[0]) is layer_type
    assert model.hf.config._attn_implementation == attention
    assert model.hf.config.architectures is None


@pytest.mark.parametrize("site", ["L1.resid_post", "L1.q_rope", "L1.attn_out"])
def test_capture_on_bridge_equals_plain_model(bridges, family, site):
    model, bridge = bridges[family]
    plain = capture(model, PROMPTS, site, progress=False)
    bridged = capture(bridge, PROMPTS, site, progress=False)
    assert torch.equal(bridged.token_ids, plain.token_ids)
    # Pad positions hold different garbage (the bridge reimplements attention); compare real tokens.
    real = plain.mask
    torch.testing.assert_close(bridged[site][real], plain[site][real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("site", ["L1.resid_post", "L1.q_rope", "L1.attn_out"])
def test_intervene_on_bridge_equals_plain_model(bridges, family, site):
    model, bridge = bridges[family]
    ids = prompt_ids(model)
    edits = {site: adder()}
    with torch.no_grad():
        unedited = model.hf(ids).logits
        with intervene(model, edits):
            expected = model.hf(ids).logits
        with intervene(bridge, edits):
            logits = bridge(ids)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    assert (expected - unedited).abs().max() > 1e-3


@pytest.mark.parametrize("kind", list(SITE_KINDS))
def test_every_site_kind_runs_its_edit_on_the_bridge(bridges, family, kind):
    model, bridge = bridges[family]
    calls = []
    with torch.no_grad(), intervene(bridge, {f"L1.{kind}": lambda act, tokens: calls.append(act)}):
        bridge(prompt_ids(model))
    assert len(calls) == 1, f"L1.{kind} installed on the bridge but its edit never ran"


# --- HookedTransformer ---------------------------------------------------------------------


def test_hooked_transformer_from_reproduces_logits(hooked, family):
    model, ht = hooked[family]
    ids = prompt_ids(model)
    with torch.no_grad():
        torch.testing.assert_close(ht(ids), model.hf(ids).logits, rtol=0, atol=1e-4)


@pytest.mark.parametrize("site", ["L1.resid_post", "L1.q_rope", "L2.q_rope.h1", "L0.k_rope.h0"])
def test_hooked_transformer_edits_see_the_activations_capture_sees(hooked, family, site):
    model, ht = hooked[family]
    ids = prompt_ids(model)
    seen: list[Tensor] = []
    with torch.no_grad(), hooked_transformer_edits(ht, {site: lambda act, tokens: seen.append(act.clone())}):
        ht(ids)
    text = model.tokenizer.decode(ids[0], skip_special_tokens=True)
    expected = capture(model, [text], site, progress=False)[site]
    assert len(seen) == 1
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("site", ["L1.resid_post", "L2.q_rope", "L1.v.h1"])
def test_hooked_transformer_edit_changes_logits_like_intervene(hooked, family, site):
    model, ht = hooked[family]
    ids = prompt_ids(model)
    edits = {site: adder()}
    with torch.no_grad():
        unedited = ht(ids)
        with hooked_transformer_edits(ht, edits):
            edited = ht(ids)
        with intervene(model, edits):
            expected = model.hf(ids).logits
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-4)
    assert (edited - unedited).abs().max() > 1e-3


@pytest.mark.parametrize("use_cache", [True, False])
def test_hooked_transformer_generation_marks_generated_tokens_like_hf(hooked, family, use_cache):
    model, ht = hooked[family]
    ids = prompt_ids(model)
    seen: list[TokenInfo] = []
    edits = {"L0.resid_post": [lambda act, tokens: seen.append(tokens), adder(scale=8.0)]}
    with torch.no_grad():
        with hooked_transformer_edits(ht, edits):
            generated = ht.generate(
                ids,
                max_new_tokens=4,
                do_sample=False,
                use_past_kv_cache=use_cache,
                stop_at_eos=False,
                verbose=False,
            )
        with intervene(model, {"L0.resid_post": adder(scale=8.0)}):
            expected = model.hf.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert torch.equal(generated, expected)
    n = ids.shape[1]
    assert [int(t.positions[0, -1]) for t in seen] == [n - 1, n, n + 1, n + 2]
    assert [bool(t.is_generated[0, -1]) for t in seen] == [False, True, True, True]
    assert [int(t.is_generated.sum()) for t in seen] == ([0, 1, 1, 1] if use_cache else [0, 1, 2, 3])
    assert all(int(t.prompt_lengths[0]) == ids.shape[1] for t in seen)


def test_hooked_transformer_edits_remove_their_hooks_even_on_error(hooked):
    model, ht = hooked["llama"]

    def failing(act: Tensor, tokens: TokenInfo) -> Tensor:
        raise KeyError("boom")

    with pytest.raises(KeyError), hooked_transformer_edits(ht, {"L1.resid_post": failing}):
        ht(prompt_ids(model))
    assert not ht.blocks[1].hook_resid_post._forward_hooks
    assert all(not block._forward_pre_hooks for block in ht.blocks)


def test_hooked_transformer_attn_pattern_is_read_only(hooked):
    model, ht = hooked["llama"]
    with pytest.raises(InputError, match="read-only"):
        with hooked_transformer_edits(ht, {"L1.attn_pattern.h0": lambda act, tokens: act * 2}):
            ht(prompt_ids(model))


def test_hooked_transformer_rejects_q_on_qk_norm_models(hooked):
    _, ht = hooked["gemma3"]
    with pytest.raises(InputError, match="QK norm"):
        with hooked_transformer_edits(ht, {"L1.q": lambda act, tokens: None}):
            pass


def test_hooked_transformer_from_names_supported_families():
    with pytest.raises(InputError, match="llama, gemma3"):
        hooked_transformer_from(tiny_model("mistral"))
