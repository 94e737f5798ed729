import pytest
import torch

import steerscope as ss
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.steering import SteeringVector, diff_of_means, pca_of_differences, steer, sweep_layers
from steerscope.tiny import tiny_model

PROMPTS = ["hello there, friend", "hi", "a b c d e"]
POSITION_MODES = ["all", "prompt", "last_prompt", "generated", (2, 5), range(0, 3)]


def _vector(model, seed=0, sites=("L1.resid_post",)):
    g = torch.Generator().manual_seed(seed)
    directions = {s: torch.randn(model.anatomy.d_model, generator=g) for s in sites}
    return SteeringVector(directions, ss.steering.Fingerprint.of(model), {"method": "random"})


def _greedy(model, inputs, **kwargs):
    out = model.generate(
        **inputs,
        max_new_tokens=6,
        min_new_tokens=6,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
        **kwargs,
    )
    return out.sequences, torch.stack(out.logits, 1)


@pytest.mark.parametrize("positions", POSITION_MODES, ids=str)
def test_kv_cache_static_cache_and_no_cache_give_the_same_steered_tokens(tiny_gemma, positions):
    """A static cache passes a 4-D mask per layer type (padding is read from the position ids)
    and its sliding-window layers stop counting once full (the length is read from a full one)."""
    vector = _vector(tiny_gemma, sites=("L1.resid_post", "L2.resid_pre"))
    inputs = tokenize_for_generate(tiny_gemma, PROMPTS)
    with steer(tiny_gemma, vector, strength=0.8, positions=positions):
        cached, _ = _greedy(tiny_gemma, inputs)
        uncached, _ = _greedy(tiny_gemma, inputs, use_cache=False)
        static, _ = _greedy(tiny_gemma, inputs, cache_implementation="static")
    plain, _ = _greedy(tiny_gemma, inputs)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, static)
    assert not torch.equal(cached, plain)


@pytest.mark.parametrize("positions", ["all", "last_prompt", "generated"])
def test_padded_batch_matches_each_prompt_alone(tiny_llama, positions):
    vector = _vector(tiny_llama, seed=3)
    with steer(tiny_llama, vector, strength=0.5, positions=positions):
        batched, batched_logits = _greedy(tiny_llama, tokenize_for_generate(tiny_llama, PROMPTS))
        for i, prompt in enumerate(PROMPTS):
            alone, alone_logits = _greedy(tiny_llama, tokenize_for_generate(tiny_llama, [prompt]))
            assert torch.equal(batched[i, -alone.shape[1] :], alone[0])
            assert torch.allclose(batched_logits[i], alone_logits[0], atol=1e-4)


def test_strength_zero_is_bit_identical(tiny_gemma):
    inputs = tokenize_for_generate(tiny_gemma, PROMPTS)
    plain, plain_logits = _greedy(tiny_gemma, inputs)
    with steer(tiny_gemma, _vector(tiny_gemma), strength=0.0):
        zero, zero_logits = _greedy(tiny_gemma, inputs)
    assert torch.equal(plain, zero) and torch.equal(plain_logits, zero_logits)


def test_hooks_are_gone_after_the_block_even_when_generate_raises(tiny_llama):
    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in tiny_llama.hf.modules())

    before = count()
    with pytest.raises(ValueError, match="max_new_tokens"):  # transformers' own error, mid-generate
        with steer(tiny_llama, _vector(tiny_llama), strength=1.0):
            assert count() > before
            tiny_llama.generate(**tokenize_for_generate(tiny_llama, PROMPTS), max_new_tokens=-3)
    assert count() == before


def test_relative_strength_adds_that_fraction_of_the_residual_norm(tiny_llama):
    vector = _vector(tiny_llama)
    plain = ss.capture(tiny_llama, PROMPTS, "L1.resid_post")
    with steer(tiny_llama, vector, strength=0.3):
        steered = ss.capture(tiny_llama, PROMPTS, "L1.resid_post")
    added = (steered["L1.resid_post"] - plain["L1.resid_post"])[plain.mask]
    norms = plain["L1.resid_post"][plain.mask].norm(dim=-1)
    assert torch.allclose(added.norm(dim=-1), 0.3 * norms, rtol=1e-4)
    unit = vector.directions["L1.resid_post"] / vector.directions["L1.resid_post"].norm()
    assert torch.allclose(added / added.norm(dim=-1, keepdim=True), unit.expand_as(added), atol=1e-4)


def test_absolute_and_norm_preserving_modes(tiny_llama):
    vector = _vector(tiny_llama)
    plain = ss.capture(tiny_llama, PROMPTS, "L1.resid_post")
    with steer(tiny_llama, vector, strength=2.0, scale="absolute"):
        absolute = ss.capture(tiny_llama, PROMPTS, "L1.resid_post")
    added = (absolute["L1.resid_post"] - plain["L1.resid_post"])[plain.mask]
    assert torch.allclose(added, 2.0 * vector.directions["L1.resid_post"].expand_as(added), atol=1e-4)
    with steer(tiny_llama, vector, strength=0.5, norm_preserving=True):
        kept = ss.capture(tiny_llama, PROMPTS, "L1.resid_post")
    a, b = kept["L1.resid_post"][plain.mask], plain["L1.resid_post"][plain.mask]
    assert torch.allclose(a.norm(dim=-1), b.norm(dim=-1), rtol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3)


def test_multiple_vectors_and_strengths(tiny_llama):
    v1, v2 = _vector(tiny_llama, 1), _vector(tiny_llama, 2, sites=("L2.resid_post",))
    batch = tokenize(tiny_llama, PROMPTS)
    with steer(tiny_llama, [v1, v2], strength=[0.5, 0.0]):
        both = tiny_llama.hf(**batch).logits
    with steer(tiny_llama, v1, strength=0.5):
        one = tiny_llama.hf(**batch).logits
    assert torch.equal(both, one)
    with pytest.raises(InputError, match="got 3 strengths for 2 vectors"):
        with steer(tiny_llama, [v1, v2], strength=[1.0, 2.0, 3.0]):
            pass


def test_save_load_round_trip_and_fit_checks(tmp_path, tiny_llama):
    vector = _vector(tiny_llama, sites=("L1.resid_post", "L3.resid_pre"))
    vector.save(tmp_path / "sentiment")
    loaded = SteeringVector.load(tmp_path / "sentiment", model=tiny_llama)
    assert loaded.fingerprint == vector.fingerprint and loaded.provenance == vector.provenance
    assert all(torch.equal(loaded.directions[s], vector.directions[s]) for s in vector.directions)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sentiment.json", "sentiment.safetensors"]

    gemma = tiny_model("gemma3")
    with pytest.raises(
        ValueError, match="made for llama with d_model 64, 4 layers, .*; this model is gemma3"
    ):
        loaded.check(gemma)
    with pytest.raises(InputError, match="NaN or Inf"):
        SteeringVector({"L1.resid_post": torch.full((64,), float("nan"))}, vector.fingerprint)
    with pytest.raises(InputError, match=r"shape \(32,\); expected \(64,\)"):
        SteeringVector({"L1.resid_post": torch.ones(32)}, vector.fingerprint)
    deep = SteeringVector({"L9.resid_post": torch.ones(64)}, vector.fingerprint)
    with pytest.raises(InputError, match="layer 9 out of range"):
        deep.check(tiny_llama)
    with pytest.raises(InputError, match="missing"):
        SteeringVector.load(tmp_path / "nothing")
    with pytest.raises(InputError, match="bad positions 'middle'"):
        with steer(tiny_llama, vector, positions="middle"):
            pass


def test_diff_of_means_and_pca_directions(tiny_llama):
    positive = ["I am happy A", "we are glad A", "so good A"]
    negative = ["I am happy B", "we are glad B", "so good B"]
    vector = diff_of_means(tiny_llama, positive, negative, "L2.resid_post")
    pos = ss.capture(tiny_llama, positive, "L2.resid_post", reduce="last")["L2.resid_post"]
    neg = ss.capture(tiny_llama, negative, "L2.resid_post", reduce="last")["L2.resid_post"]
    assert torch.allclose(vector.directions["L2.resid_post"], pos.mean(0) - neg.mean(0), atol=1e-5)
    assert vector.provenance["method"] == "diff_of_means" and vector.provenance["n_positive"] == 3
    pca = pca_of_differences(tiny_llama, positive, negative, "L2.resid_post")
    cosine = torch.nn.functional.cosine_similarity(
        pca.directions["L2.resid_post"], vector.directions["L2.resid_post"], 0
    )
    assert cosine > 0.5


def test_completion_mean_uses_only_completion_tokens(tiny_llama):
    pairs = [("ab", "cd"), ("xyz", "w")]
    vector = diff_of_means(
        tiny_llama, pairs, [("ab", "zz"), ("xyz", "q")], "L0.resid_post", reduce="completion_mean"
    )
    full = ss.capture(tiny_llama, ["abcd", "xyzw", "abzz", "xyzq"], "L0.resid_post")
    acts = full["L0.resid_post"]
    pos = torch.stack([acts[0, -2:].mean(0), acts[1, -1]])
    neg = torch.stack([acts[2, -2:].mean(0), acts[3, -1]])
    assert torch.allclose(vector.directions["L0.resid_post"], pos.mean(0) - neg.mean(0), atol=1e-5)


def test_layer_sweep_finds_a_planted_contrast(tiny_llama):
    positive = [f"item {i} X" for i in range(8)]
    negative = [f"item {i} Y" for i in range(8)]
    scores = sweep_layers(tiny_llama, (positive[:5], negative[:5]), (positive[5:], negative[5:]))
    assert [s["layer"] for s in scores] == [0, 1, 2, 3]
    assert all(s["accuracy"] == 1.0 and s["separation"] > 1 for s in scores)


def test_steering_the_embedded_gemma_is_cache_and_batch_correct(gemma):
    prompts = ["My first week at the new job has been", "The food was"]
    g = torch.Generator().manual_seed(0)
    vector = SteeringVector(
        {"L6.resid_post": torch.randn(640, generator=g)}, ss.steering.Fingerprint.of(gemma)
    )
    inputs = tokenize_for_generate(gemma, prompts)
    with steer(gemma, vector, strength=0.2, positions="generated"):
        cached, logits = _greedy(gemma, inputs)
        uncached, _ = _greedy(gemma, inputs, use_cache=False)
        alone, alone_logits = _greedy(gemma, tokenize_for_generate(gemma, prompts[1:]))
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[1, -alone.shape[1] :], alone[0])
    assert torch.allclose(logits[1], alone_logits[0], atol=1e-4 * logits[1].abs().max())
    plain, _ = _greedy(gemma, inputs)
    assert not torch.equal(plain, cached)


def test_every_token_mode_steers_pads_too_and_real_tokens_exactly_as_a_masked_edit(tiny_gemma):
    """positions="all" adds at pads as well (no token tracking); the attention mask keeps pads from
    real tokens, so every real token's logits are bit-identical to adding at real tokens only."""
    vector = _vector(tiny_gemma, seed=5, sites=("L1.resid_post", "L2.resid_post"))
    inputs = tokenize_for_generate(tiny_gemma, PROMPTS)
    assert not inputs["attention_mask"].bool().all()  # the batch is padded

    def real_only(direction):
        return lambda act, tokens: act + tokens.is_real.unsqueeze(-1) * (0.8 * direction)

    masked = {site: real_only(d) for site, d in vector.directions.items()}
    with steer(tiny_gemma, vector, strength=0.8, scale="absolute"):
        everywhere, everywhere_logits = _greedy(tiny_gemma, inputs)
        prompt_logits = tiny_gemma.hf(**inputs).logits
    with ss.intervene(tiny_gemma, masked):
        real, real_logits = _greedy(tiny_gemma, inputs)
        masked_prompt_logits = tiny_gemma.hf(**inputs).logits
    assert torch.equal(everywhere, real)
    assert torch.equal(everywhere_logits, real_logits)
    is_real = inputs["attention_mask"].bool()
    assert torch.equal(prompt_logits[is_real], masked_prompt_logits[is_real])
    assert not torch.equal(prompt_logits[~is_real], masked_prompt_logits[~is_real])


@pytest.fixture(params=["hooks", "bank"])
def steering_path(request, tiny_llama):
    """tiny_llama steered through intervene's hooks, or through a steering bank (eager)."""
    if request.param == "hooks":
        yield tiny_llama
        return
    with ss.steering.install_steering_bank(tiny_llama, ["L1.resid_post", "L2.resid_post"]):
        yield tiny_llama


def test_per_row_strengths_and_vectors_give_each_row_its_own_run(steering_path):
    model = steering_path
    v1, v2 = _vector(model, 1), _vector(model, 2, sites=("L1.resid_post", "L2.resid_post"))
    inputs = tokenize_for_generate(model, PROMPTS)
    # (vectors, strength, per_row) and each row's (vector, strength) alone
    cases = [
        (v1, [0.0, 0.5, -0.5], False, [(v1, 0.0), (v1, 0.5), (v1, -0.5)]),
        (v1, torch.tensor([0.3, 0.3, -0.7]), False, [(v1, 0.3), (v1, 0.3), (v1, -0.7)]),
        ([v1, v2, v1], 0.6, True, [(v1, 0.6), (v2, 0.6), (v1, 0.6)]),
        ([v2, v1, v1], [0.5, 0.0, -0.4], True, [(v2, 0.5), (v1, 0.0), (v1, -0.4)]),
    ]
    for vectors, strength, per_row, rows in cases:
        with steer(model, vectors, strength=strength, positions="generated", per_row=per_row):
            batched, batched_logits = _greedy(model, inputs)
        for i, (prompt, (vector, row_strength)) in enumerate(zip(PROMPTS, rows, strict=True)):
            with steer(model, vector, strength=row_strength, positions="generated"):
                single, single_logits = _greedy(model, tokenize_for_generate(model, [prompt]))
            assert torch.equal(batched[i, -single.shape[1] :], single[0])
            assert torch.allclose(batched_logits[i], single_logits[0], atol=1e-4)
    plain, _ = _greedy(model, inputs)
    with steer(model, [v1, v2, v1], strength=[0.0, 0.0, 0.0], per_row=True):
        assert torch.equal(_greedy(model, inputs)[0], plain)


def test_beams_and_sampling_repeat_each_rows_strength(steering_path):
    model = steering_path
    vector = _vector(model, 4)
    prompts = PROMPTS[:2]
    inputs = tokenize_for_generate(model, prompts)
    beams = {"num_beams": 3, "max_new_tokens": 5, "do_sample": False}
    with steer(model, vector, strength=[0.6, -0.6], positions="generated"):
        beamed = model.generate(**inputs, **beams)
    for i, prompt in enumerate(prompts):
        with steer(model, vector, strength=[0.6, -0.6][i], positions="generated"):
            alone = model.generate(**tokenize_for_generate(model, [prompt]), **beams)
        assert torch.equal(beamed[i, -alone.shape[1] :], alone[0])

    sampling = {"do_sample": True, "max_new_tokens": 6, "num_return_sequences": 2, "top_k": 0}
    torch.manual_seed(7)
    with steer(model, vector, strength=[0.6, -0.6]):
        sampled = model.generate(**inputs, **sampling)
    repeated = {key: value.repeat_interleave(2, 0) for key, value in inputs.items()}
    torch.manual_seed(7)
    with steer(model, vector, strength=[0.6, 0.6, -0.6, -0.6]):
        expected = model.generate(**repeated, **{**sampling, "num_return_sequences": 1})
    assert torch.equal(sampled, expected)
