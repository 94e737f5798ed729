import pytest
import torch

import steerscope as ss
from steerscope.capture import tokenize
from steerscope.errors import InputError
from steerscope.rotary import rotate

PROMPTS = ["The capital of France is", "Sally puts the ball in the basket.", "Hi"]


def _hidden_states(model, prompts):
    batch = tokenize(model, prompts)
    with torch.no_grad():
        out = model.hf(**batch, output_hidden_states=True)
    return batch, out.hidden_states


def test_residual_capture_equals_output_hidden_states(tiny):
    batch, hidden = _hidden_states(tiny, PROMPTS)
    last = tiny.anatomy.n_layers - 1
    sites = [f"L{i}.resid_pre" for i in range(tiny.anatomy.n_layers)] + [
        f"L{i}.resid_post" for i in range(last)
    ]
    acts = ss.capture(tiny, PROMPTS, sites, batch_size=len(PROMPTS))
    for i in range(tiny.anatomy.n_layers):
        assert torch.equal(acts[f"L{i}.resid_pre"], hidden[i])
    for i in range(last):
        assert torch.equal(acts[f"L{i}.resid_post"], hidden[i + 1])
    assert torch.equal(acts.mask, batch["attention_mask"].bool())
    assert torch.equal(acts.token_ids, batch["input_ids"])


def test_branches_add_up_to_the_residual(tiny):
    acts = ss.capture(tiny, PROMPTS, ["L1.resid_pre", "L1.attn_out", "L1.mlp_out", "L1.resid_post"])
    total = acts["L1.resid_pre"] + acts["L1.attn_out"] + acts["L1.mlp_out"]
    assert torch.allclose(total, acts["L1.resid_post"], atol=1e-5)


def test_post_rope_queries_are_pre_rope_rotated_by_the_models_rotary_embedding(tiny):
    acts = ss.capture(tiny, PROMPTS, ["L1.q", "L1.q_rope", "L1.k", "L1.k_rope", "L1.k_rope.h1"])
    layer_type = tiny.anatomy.layer_types[1]
    rotary = tiny.hf.model.rotary_emb
    position_ids = acts.positions.clamp(min=0)
    args = (acts["L1.q"], position_ids) + ((layer_type,) if tiny.anatomy.family.name == "gemma3" else ())
    cos, sin = rotary(*args)
    assert torch.allclose(acts["L1.q_rope"], rotate(acts["L1.q"], cos, sin), atol=1e-6)
    assert torch.allclose(acts["L1.k_rope"], rotate(acts["L1.k"], cos, sin), atol=1e-6)
    assert torch.equal(acts["L1.k_rope.h1"], acts["L1.k_rope"][:, :, 1])
    # RoPE is a rotation: it keeps each pair's norm
    assert not torch.allclose(acts["L1.q_rope"], acts["L1.q"])


def test_left_padded_batch_equals_each_prompt_alone(tiny_gemma):
    batched = ss.capture(tiny_gemma, PROMPTS, ["L2.resid_post", "L2.q_rope"])
    for i, prompt in enumerate(PROMPTS):
        alone = ss.capture(tiny_gemma, [prompt], ["L2.resid_post", "L2.q_rope"])
        n = int(alone.mask.sum())
        for site in ("L2.resid_post", "L2.q_rope"):
            assert torch.allclose(batched[site][i, -n:], alone[site][0], atol=1e-5)
        assert torch.equal(batched.positions[i, -n:], torch.arange(n))


def test_reductions_pick_last_token_and_mean_over_real_tokens(tiny_llama):
    full = ss.capture(tiny_llama, PROMPTS, "L2.resid_post")
    last = ss.capture(tiny_llama, PROMPTS, "L2.resid_post", reduce="last")
    mean = ss.capture(tiny_llama, PROMPTS, "L2.resid_post", reduce="mean")
    assert torch.allclose(last["L2.resid_post"], full["L2.resid_post"][:, -1], atol=1e-6)
    for i in range(len(PROMPTS)):
        real = full["L2.resid_post"][i][full.mask[i]]
        assert torch.allclose(mean["L2.resid_post"][i], real.mean(0), atol=1e-5)


def test_attention_pattern_matches_eager_output_attentions(tiny_gemma):
    acts = ss.capture(tiny_gemma, PROMPTS, ["L3.attn_pattern", "L0.attn_pattern.h2"], batch_size=len(PROMPTS))
    assert tiny_gemma.hf.config._attn_implementation != "eager"  # switched back after capture
    batch = tokenize(tiny_gemma, PROMPTS)
    tiny_gemma.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            attentions = tiny_gemma.hf(**batch, output_attentions=True).attentions
    finally:
        tiny_gemma.hf.set_attn_implementation("sdpa")
    assert torch.allclose(acts["L3.attn_pattern"], attentions[3])
    assert torch.allclose(acts["L0.attn_pattern.h2"], attentions[0][:, 2])
    rows = acts["L3.attn_pattern"].sum(-1)[acts.mask[:, None, :].expand(-1, 4, -1)]
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)


def test_capture_rejects_bad_input(tiny_llama):
    with pytest.raises(InputError, match="list of strings"):
        ss.capture(tiny_llama, "just one string", "L0.resid_post")
    with pytest.raises(InputError, match="unknown reduce"):
        ss.capture(tiny_llama, PROMPTS, "L0.resid_post", reduce="max")
    with pytest.raises(InputError, match="layers 0-3"):
        ss.capture(tiny_llama, PROMPTS, "L7.resid_post")
    with pytest.raises(InputError, match="was not captured"):
        ss.capture(tiny_llama, PROMPTS, "L0.resid_post")["L1.resid_post"]


def test_embedded_gemma_capture_matches_hidden_states(gemma):
    prompts = ["The capital of France is", "Sally puts the ball in the basket."]
    _, hidden = _hidden_states(gemma, prompts)
    acts = ss.capture(gemma, prompts, ["L9.resid_post", "L3.q_rope"])
    assert torch.equal(acts["L9.resid_post"], hidden[10])
    assert acts["L3.q_rope"].shape == (2, acts.mask.shape[1], 4, 256)


def test_next_token_logits_come_from_the_same_forward_as_the_activations(tiny_llama):
    sites = ["L1.resid_post", "L3.mlp_out"]
    plain = ss.capture(tiny_llama, PROMPTS, sites, reduce="last", batch_size=2)
    both = ss.capture(tiny_llama, PROMPTS, sites, reduce="last", batch_size=2, next_token_logits=True)
    with torch.no_grad():
        expected = tiny_llama.hf(**tokenize(tiny_llama, PROMPTS)).logits[:, -1]
    assert plain.next_token_logits is None
    for site in sites:
        torch.testing.assert_close(both[site], plain[site], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both.next_token_logits, expected, rtol=1e-5, atol=1e-5)
