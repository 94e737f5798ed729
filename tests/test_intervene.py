import pytest
import torch

import steerscope as ss
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.intervene import module_at, needs_result_check, result_checked

PROMPTS = ["hello there, friend", "hi", "a b c"]


def _all_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf.modules())


def _record_tokens(model, use_cache):
    seen = []

    def record(act, tokens):
        seen.append(tokens)

    with ss.intervene(model, {"L1.resid_post": record}):
        model.generate(
            **tokenize_for_generate(model, PROMPTS), max_new_tokens=4, do_sample=False, use_cache=use_cache
        )
    return seen


def test_token_info_is_the_same_with_and_without_kv_cache(tiny_gemma):
    cached = _record_tokens(tiny_gemma, use_cache=True)
    uncached = _record_tokens(tiny_gemma, use_cache=False)
    assert len(cached) == len(uncached) == 4
    # the first call is the prompt: positions count real tokens, pads are -1
    first = cached[0]
    lengths = first.is_real.sum(1)
    assert torch.equal(first.prompt_lengths, lengths)
    assert torch.equal(first.is_prompt, first.is_real)
    assert torch.equal(first.is_last_prompt.float().argmax(1), torch.full((3,), first.positions.shape[1] - 1))
    for step, (c, u) in enumerate(zip(cached[1:], uncached[1:], strict=False), start=1):
        # with the cache only the new token is seen; without, the whole sequence again
        assert torch.equal(c.positions[:, -1], u.positions[:, -1])
        assert torch.equal(c.positions[:, -1], lengths + step - 1)
        assert c.is_generated.all() and not c.is_prompt.any()
        assert torch.equal(u.is_generated.sum(1), torch.full((3,), step))
        expected_prompt = u.is_real.clone()
        expected_prompt[:, first.positions.shape[1] :] = False
        assert torch.equal(u.is_prompt, expected_prompt)


def _add(vector, where):
    def edit(act, tokens):
        return act + vector * getattr(tokens, where)[..., None].to(act.dtype)

    return edit


@pytest.mark.parametrize("where", ["is_real", "is_prompt", "is_last_prompt", "is_generated"])
def test_steered_greedy_generation_is_the_same_with_and_without_cache(tiny_gemma, where):
    vector = torch.randn(tiny_gemma.anatomy.d_model, generator=torch.Generator().manual_seed(1)) * 3
    inputs = tokenize_for_generate(tiny_gemma, PROMPTS)
    outputs = {}
    for use_cache in (True, False):
        with ss.intervene(tiny_gemma, {"L1.resid_post": _add(vector, where)}):
            outputs[use_cache] = tiny_gemma.generate(
                **inputs, max_new_tokens=6, do_sample=False, use_cache=use_cache
            )
    plain = tiny_gemma.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(outputs[True], outputs[False])
    assert not torch.equal(outputs[True], plain)


def test_left_padded_batch_steers_each_prompt_as_alone(tiny_llama):
    vector = torch.randn(tiny_llama.anatomy.d_model, generator=torch.Generator().manual_seed(2)) * 3
    edits = {"L2.resid_pre": _add(vector, "is_last_prompt"), "L1.mlp_out": _add(vector, "is_generated")}
    inputs = tokenize_for_generate(tiny_llama, PROMPTS)
    with ss.intervene(tiny_llama, edits):
        batched = tiny_llama.generate(**inputs, max_new_tokens=5, do_sample=False)
        for i, prompt in enumerate(PROMPTS):
            alone = tiny_llama.generate(
                **tokenize_for_generate(tiny_llama, [prompt]), max_new_tokens=5, do_sample=False
            )
            assert torch.equal(batched[i, -alone.shape[1] :], alone[0])


def test_hooks_are_removed_on_exit_and_on_exceptions(tiny_llama):
    before = _all_hooks(tiny_llama)
    with ss.intervene(tiny_llama, {"L0.resid_post": lambda a, t: a * 2, "L1.q_rope.h1": lambda a, t: a}):
        assert _all_hooks(tiny_llama) > before
        assert "forward" in tiny_llama.hf.model.__dict__  # the decoder leaves compiled graphs
    assert _all_hooks(tiny_llama) == before
    assert not any("forward" in m.__dict__ for m in tiny_llama.hf.modules())
    with pytest.raises(RuntimeError, match="inside generate"):
        with ss.intervene(tiny_llama, {"L0.resid_post": lambda a, t: a * 2}):

            def fail(act, tokens):
                raise RuntimeError("inside generate")

            with ss.intervene(tiny_llama, {"L2.mlp_out": fail}):
                tiny_llama.generate(**tokenize_for_generate(tiny_llama, PROMPTS), max_new_tokens=2)
    assert _all_hooks(tiny_llama) == before
    assert not any("forward" in m.__dict__ for m in tiny_llama.hf.modules())


def test_nested_blocks_compose(tiny_llama):
    a = torch.randn(tiny_llama.anatomy.d_model)
    b = torch.randn(tiny_llama.anatomy.d_model)
    batch = tokenize(tiny_llama, PROMPTS)
    with ss.intervene(tiny_llama, {"L1.resid_post": _add(a, "is_real")}):
        with ss.intervene(tiny_llama, {"L1.resid_post": _add(b, "is_real")}):
            nested = tiny_llama.hf(**batch).logits
    with ss.intervene(tiny_llama, {"L1.resid_post": _add(a + b, "is_real")}):
        single = tiny_llama.hf(**batch).logits
    assert torch.allclose(nested, single, atol=1e-5)


def test_zeroing_a_head_after_rope_equals_zeroing_it_before(tiny):
    batch = tokenize(tiny, PROMPTS)

    def zero(act, tokens):
        return torch.zeros_like(act)

    with ss.intervene(tiny, {"L1.q_rope.h2": zero}):
        after_rope = tiny.hf(**batch).logits
    with ss.intervene(tiny, {"L1.q.h2": zero}):
        before_rope = tiny.hf(**batch).logits
    plain = tiny.hf(**batch).logits
    assert torch.allclose(after_rope, before_rope, atol=1e-5)
    assert not torch.allclose(after_rope, plain, atol=1e-3)


def test_identity_edit_after_rope_changes_nothing(tiny_gemma):
    batch = tokenize(tiny_gemma, PROMPTS)
    plain = tiny_gemma.hf(**batch).logits
    with ss.intervene(tiny_gemma, {"L2.k_rope": lambda a, t: a.clone()}):
        edited = tiny_gemma.hf(**batch).logits
    assert torch.allclose(plain, edited, atol=1e-6)


def test_bad_edits_fail_clearly(tiny_llama):
    batch = tokenize(tiny_llama, PROMPTS)
    with pytest.raises(
        ValueError,
        match=r"at L0.resid_post returned a tensor \(3,\) .*; expected None or a tensor \(3, 20, 64\)",
    ):
        with ss.intervene(tiny_llama, {"L0.resid_post": lambda a, t: torch.zeros(3)}):
            tiny_llama.hf(**batch)
    with pytest.raises(InputError, match="callable"):
        with ss.intervene(tiny_llama, {"L0.resid_post": [1, 2]}):
            pass
    tiny_llama.hf.set_attn_implementation("eager")
    try:
        with pytest.raises(InputError, match="read-only"):
            with ss.intervene(tiny_llama, {"L0.attn_pattern": lambda a, t: a * 0}):
                tiny_llama.hf(**batch)
    finally:
        tiny_llama.hf.set_attn_implementation("sdpa")
    with pytest.raises(InputError, match="returns no probabilities"):
        with ss.intervene(tiny_llama, {"L0.attn_pattern": lambda a, t: None}):
            tiny_llama.hf(**batch)


def test_edit_inside_embedded_gemma_generate_changes_output_and_is_gone_after(gemma):
    inputs = tokenize_for_generate(gemma, ["The capital of France is"])
    plain = gemma.generate(**inputs, max_new_tokens=6, do_sample=False)
    direction = torch.randn(gemma.anatomy.d_model, generator=torch.Generator().manual_seed(0))
    direction /= direction.norm()

    def push(act, tokens):
        return act + act.norm(dim=-1, keepdim=True) * direction

    with ss.intervene(gemma, {"L9.resid_post": push}):
        steered = gemma.generate(**inputs, max_new_tokens=6, do_sample=False)
    again = gemma.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert not torch.equal(plain, steered)
    assert torch.equal(plain, again)


def test_edits_that_ignore_tokens_get_none_and_no_token_tracking(tiny_llama):
    decoder = module_at(tiny_llama.hf, tiny_llama.anatomy.family.decoder)
    seen = {"ignoring": [], "reading": []}
    ignoring = ss.ignores_tokens(lambda act, tokens: seen["ignoring"].append(tokens))
    reading = lambda act, tokens: seen["reading"].append(tokens)  # noqa: E731
    batch = tokenize(tiny_llama, PROMPTS)
    with ss.intervene(tiny_llama, {"L1.resid_post": ignoring}):
        assert not decoder._forward_pre_hooks
        tiny_llama.hf(**batch)
    assert seen["ignoring"] == [None]
    with ss.intervene(tiny_llama, {"L1.resid_post": ignoring, "L2.resid_post": reading}):
        assert decoder._forward_pre_hooks
        tiny_llama.hf(**batch)
    assert seen["ignoring"] == [None, None]
    assert isinstance(seen["reading"][0], ss.TokenInfo)
    assert seen["reading"][0].is_real.tolist() == batch["attention_mask"].bool().tolist()


def test_only_edits_marked_result_checked_skip_the_result_check(tiny_llama):
    batch = tokenize(tiny_llama, PROMPTS)
    halve = lambda act, tokens: act[..., :1]  # noqa: E731
    with pytest.raises(ss.InputError, match="returned a tensor"):
        with ss.intervene(tiny_llama, {"L1.resid_post": [lambda act, tokens: None, halve]}):
            tiny_llama.hf(**batch)
    marked = result_checked(lambda act, tokens: act * 2)
    assert not needs_result_check([marked])
    assert needs_result_check([marked, halve])
    with ss.intervene(tiny_llama, {"L1.resid_post": marked}):
        doubled = tiny_llama.hf(**batch).logits
    assert not torch.equal(doubled, tiny_llama.hf(**batch).logits)
