"""Steering inside compiled generation: a compiled model is steered exactly (through a steering
bank) or refused in one line, never silently left unsteered; the bank's graph is compiled once
and entering, leaving or changing a block recompiles nothing; intervene's Python edits run
eagerly inside a compiled caller.

Compiles use the tiny models and torch's `aot_eager` or `eager` backends: dynamo's tracing and
guards, and AOTAutograd's handling of the bank's in-place updates, are what steering depends on;
inductor's code (`benchmarks/compiled_steering.py` checks its tokens too) would only add minutes.
Dynamo's cache is reset around every test: its recompile limit counts every graph of a shared
code object, whatever the model.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from transformers import CompileConfig

import steerscope as ss
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.compiled import unwrap_forward, wrap_forward, wrappers_of
from steerscope.errors import InputError
from steerscope.steering import Fingerprint, SteeringBank, SteeringVector, install_steering_bank, steer
from steerscope.tiny import tiny_model

PADDED = ["hello there, friend", "hi", "a b c d e", "xyz"]
UNPADDED = ["cats and", "dogs are", "birds fl", "fish swi"]
SITES = ("L1.resid_post", "L2.resid_pre", "L0.mlp_out", "L3.attn_out")
MODES = ("all", "prompt", "generated")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=64):
        yield
    torch._dynamo.reset()


def _vector(model, seed=0, sites=SITES):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(
        {s: torch.randn(model.anatomy.d_model, generator=g) for s in sites}, Fingerprint.of(model)
    )


def _greedy(model, inputs, cache="static", tokens=5):
    kwargs = {"use_cache": False} if cache == "none" else {"cache_implementation": cache}
    return model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **kwargs)


def _hooks_and_wrappers(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + ("forward" in m.__dict__)
        for m in model.hf.modules()
    )


# ---------------------------------------------------------------- never silently ignored


def _compile_forward(model):
    model.hf.forward = torch.compile(model.hf.forward, backend="eager")


def _compile_module(model):
    model.hf.compile(backend="eager")


def _compile_layer(model):
    model.hf.model.layers[2].compile(backend="eager")


def _compile_decoding(model):
    config = CompileConfig(backend="eager")
    config._compile_all_devices = True  # transformers' switch to compile decoding on CPU too
    model.hf.generation_config.compile_config = config
    model.hf.generation_config.cache_implementation = "static"


@pytest.mark.parametrize(
    ("compile_it", "named"),
    [
        (_compile_forward, r"model.hf.forward = torch.compile\(...\) compiles it"),
        (_compile_module, r"model.hf.compile\(\) compiles it"),
        (_compile_layer, r"model.hf.model.layers.2.compile\(\) compiles it"),
        (
            _compile_decoding,
            r"transformers compiles decoding \(generation_config: static cache, compile_config for every device\)",
        ),
        (None, r"the model is torch.compile\(model.hf\)"),
    ],
    ids=["forward", "module", "layer", "transformers", "optimized_module"],
)
def test_steering_a_compiled_model_without_a_bank_is_refused_in_one_line(tiny_llama, compile_it, named):
    before = _hooks_and_wrappers(tiny_llama)
    target = torch.compile(tiny_llama.hf, backend="eager") if compile_it is None else tiny_llama
    if compile_it is not None:
        compile_it(tiny_llama)
    with pytest.raises(
        InputError, match=f"^{named}, so steering hooks would not run in its graph; "
    ) as error:
        with steer(target, _vector(tiny_llama), strength=0.5):
            pass
    assert "steerscope.steering.install_steering_bank(model, ['L1.resid_post'" in str(error.value)
    assert "\n" not in str(error.value)
    assert _hooks_and_wrappers(tiny_llama) == before + (compile_it is _compile_forward)


def test_intervene_runs_its_edits_eagerly_and_exactly_inside_a_compiled_forward(tiny_llama):
    inputs = tokenize_for_generate(tiny_llama, PADDED)
    push = torch.randn(64, generator=torch.Generator().manual_seed(1)) * 3
    edits = {"L1.resid_post": lambda act, tokens: act + push * tokens.is_generated[..., None]}
    plain = _greedy(tiny_llama, inputs)
    with ss.intervene(tiny_llama, edits):
        expected = _greedy(tiny_llama, inputs)
    counter = CompileCounterWithBackend("eager")
    tiny_llama.hf.forward = torch.compile(tiny_llama.hf.forward, backend=counter)
    assert torch.equal(_greedy(tiny_llama, inputs), plain)  # graphs traced without the edits
    with ss.intervene(tiny_llama, edits):
        assert torch.equal(_greedy(tiny_llama, inputs), expected)
    assert torch.equal(_greedy(tiny_llama, inputs), plain)
    assert counter.frame_count > 0
    tiny_llama.hf.model.layers[2].compile(backend="eager")
    with pytest.raises(InputError, match=r"^model.hf.model.layers.2.compile\(\) compiles a module inside"):
        with ss.intervene(tiny_llama, edits):
            pass


# ---------------------------------------------------------------- the bank, compiled


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_the_bank_without_a_compiler_gives_the_hooks_tokens_with_every_cache(family):
    model = tiny_model(family)
    vector = _vector(model)
    inputs = tokenize_for_generate(model, PADDED)
    strength = [0.8, -0.5, 0.0, 0.3]
    for positions in ("all", "prompt", "last_prompt", "generated", (2, 5)):
        with steer(model, vector, strength=strength, positions=positions):
            expected = {cache: _greedy(model, inputs, cache) for cache in ("static", "dynamic", "none")}
        assert torch.equal(expected["static"], expected["dynamic"]) and torch.equal(
            expected["none"], expected["dynamic"]
        )
        with install_steering_bank(model, SITES):
            with steer(model, vector, strength=strength, positions=positions):
                for cache, tokens in expected.items():
                    assert torch.equal(_greedy(model, inputs, cache), tokens), (positions, cache)
        assert not any("forward" in m.__dict__ for m in model.hf.modules())


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_compiled_steering_gives_the_eager_tokens_and_recompiles_nothing_after_warm_up(family):
    """Eager vs compiled with a static cache, padded batch of 4 and a batch of 1, every positions
    mode, a strength, its sign and one per row; the compiled graphs warmed up once per shape and
    row count, then nothing recompiles; the tokens between blocks are the unsteered ones."""
    model = tiny_model(family)
    vector = _vector(model)
    batches = {
        "padded_4": tokenize_for_generate(model, PADDED),
        "single": tokenize_for_generate(model, UNPADDED[:1]),
    }
    assert not batches["padded_4"]["attention_mask"].bool().all()
    strengths = {"padded_4": (0.8, -0.8, [0.0, 0.4, -0.6, 1.0]), "single": (0.8, -0.8)}
    plain = {name: _greedy(model, inputs) for name, inputs in batches.items()}
    expected = {}
    for name, inputs in batches.items():
        for positions in MODES:
            for index, strength in enumerate(strengths[name]):
                with steer(model, vector, strength=strength, positions=positions):
                    expected[name, positions, index] = _greedy(model, inputs)
    counter = CompileCounterWithBackend("aot_eager")
    # transformers' static cache keeps a sliding window's length as a Python int, on which a
    # graph with static shapes specialises (a recompile per step, steered or not): gemma3
    # compiles with automatic dynamic shapes
    model.hf.forward = torch.compile(
        model.hf.forward, backend=counter, dynamic=None if family == "gemma3" else False
    )
    with install_steering_bank(model, SITES, max_batch=8):
        for name, inputs in batches.items():  # warm up: the graphs of each shape and row count
            for strength in strengths[name][1:]:
                with steer(model, vector, strength=strength, positions="generated"):
                    _greedy(model, inputs)
        warmed_up = counter.frame_count
        assert warmed_up > 0
        with torch._dynamo.config.patch(error_on_recompile=True):
            for name, inputs in batches.items():
                assert torch.equal(_greedy(model, inputs), plain[name])
                for positions in MODES:
                    for index, strength in enumerate(strengths[name]):
                        with steer(model, vector, strength=strength, positions=positions):
                            tokens = _greedy(model, inputs)
                        assert torch.equal(tokens, expected[name, positions, index]), (name, positions, index)
                    assert torch.equal(_greedy(model, inputs), plain[name])  # nothing left behind
        assert counter.frame_count == warmed_up
    for name, inputs in batches.items():  # the bank removed: the graphs without it again
        assert torch.equal(_greedy(model, inputs), plain[name])


def test_a_bank_installed_after_compiling_steers_and_its_removal_leaves_nothing(tiny_llama):
    inputs = tokenize_for_generate(tiny_llama, PADDED)
    vector = _vector(tiny_llama, sites=("L1.resid_post",))
    with steer(tiny_llama, vector, strength=0.7, positions="generated"):
        expected = _greedy(tiny_llama, inputs)
    counter = CompileCounterWithBackend("eager")
    plain = _greedy(tiny_llama, inputs)
    tiny_llama.hf.forward = torch.compile(tiny_llama.hf.forward, backend=counter, dynamic=False)
    assert torch.equal(_greedy(tiny_llama, inputs), plain)
    bank = install_steering_bank(tiny_llama, vector.sites)
    with steer(tiny_llama, vector, strength=0.7, positions="generated"):
        assert torch.equal(_greedy(tiny_llama, inputs), expected)
    assert SteeringBank.of(tiny_llama) is bank
    bank.remove()
    bank.remove()
    assert SteeringBank.of(tiny_llama) is None
    assert torch.equal(_greedy(tiny_llama, inputs), plain)
    assert not any("forward" in m.__dict__ for m in tiny_llama.hf.model.modules())


@pytest.mark.parametrize("compile_it", [_compile_module, _compile_decoding], ids=["module", "transformers"])
def test_a_bank_steers_a_compiled_module_and_transformers_compiled_decoding(tiny_llama, compile_it):
    inputs = tokenize_for_generate(tiny_llama, PADDED)
    vector = _vector(tiny_llama, sites=("L2.resid_post",))
    with steer(tiny_llama, vector, strength=[0.9, -0.9, 0.5, 0.0], positions="generated"):
        expected = _greedy(tiny_llama, inputs)
    plain = _greedy(tiny_llama, inputs)
    compile_it(tiny_llama)
    with install_steering_bank(tiny_llama, vector.sites):
        with steer(tiny_llama, vector, strength=[0.9, -0.9, 0.5, 0.0], positions="generated"):
            assert torch.equal(_greedy(tiny_llama, inputs), expected)
        assert torch.equal(_greedy(tiny_llama, inputs), plain)
        compiled = (
            "_compiled_call" in tiny_llama.hf.__dict__ or "_compiled_call_impl" in tiny_llama.hf.__dict__
        )
        assert compiled and torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
        with torch._dynamo.config.patch(error_on_recompile=True):
            with steer(tiny_llama, vector, strength=[-0.2, 0.3, 0.1, 2.0], positions="prompt"):
                _greedy(tiny_llama, inputs)


def test_a_torch_compiled_module_is_steered_through_its_bank(tiny_llama):
    batch = tokenize(tiny_llama, PADDED)
    vector = _vector(tiny_llama, sites=("L1.resid_post", "L3.mlp_out"))
    with steer(tiny_llama, vector, strength=0.4, positions="prompt"):
        expected = tiny_llama.hf(**batch).logits
    compiled = torch.compile(tiny_llama.hf, backend="eager")
    with install_steering_bank(compiled, vector.sites):
        with steer(compiled, vector, strength=0.4, positions="prompt"):
            assert torch.equal(compiled(**batch).logits, expected)


# ---------------------------------------------------------------- the bank's rules, eager


def test_bank_installation_and_blocks_are_checked(tiny_llama):
    vector = _vector(tiny_llama, sites=("L1.resid_post",))
    with pytest.raises(
        InputError, match="whole-layer sites of kinds resid_pre, attn_out, mlp_out, resid_post; got L1.q_rope"
    ):
        install_steering_bank(tiny_llama, ["L1.q_rope"])
    with pytest.raises(InputError, match="max_batch must be an integer from 1"):
        install_steering_bank(tiny_llama, "L1.resid_post", max_batch=0)
    with pytest.raises(ValueError, match="layer 7 out of range"):
        install_steering_bank(tiny_llama, "L7.resid_post")
    batch = tokenize(tiny_llama, PADDED)
    with install_steering_bank(tiny_llama, "L1.resid_post", max_batch=3) as bank:
        assert repr(bank) == "SteeringBank(L1.resid_post; max_batch 3, installed)"
        with pytest.raises(InputError, match="already has SteeringBank"):
            install_steering_bank(tiny_llama, "L2.resid_post")
        with pytest.raises(
            InputError, match="a batch of 4 rows is more than the steering bank's max_batch=3"
        ):
            with steer(tiny_llama, vector, strength=0.5):
                tiny_llama.hf(**batch)
        with pytest.raises(InputError, match="holds one steer\\(\\) block at a time"):
            with steer(tiny_llama, vector, strength=0.5):
                with steer(tiny_llama, vector, strength=0.5):
                    pass
        with pytest.raises(
            InputError, match="a steering block with 4 rows is more than the steering bank's max_batch=3"
        ):
            with steer(tiny_llama, vector, strength=[0.1, 0.2, 0.3, 0.4]):
                pass
        with pytest.raises(InputError, match="2 per-row strengths or vectors for a batch of 3 rows"):
            with steer(tiny_llama, vector, strength=[0.1, 0.2]):
                tiny_llama.hf(**tokenize(tiny_llama, PADDED[:3]))
        other = _vector(tiny_llama, sites=("L2.resid_post",))
        with steer(tiny_llama, other, strength=0.5):  # a site it has no slot for: eager hooks
            assert len(tiny_llama.hf.model.layers[2]._forward_hooks) == 1
    assert repr(bank).endswith("removed)")
    with pytest.raises(InputError, match="was removed"):
        with bank.holding({}, "all", True, False):
            pass


@pytest.mark.parametrize(
    ("vectors", "block"),
    [
        ("one", {"strength": 1.5, "scale": "absolute", "positions": "prompt"}),
        ("one", {"strength": [0.5, -0.5, 0.2, 0.9], "norm_preserving": True, "positions": "generated"}),
        ("two", {"strength": [0.3, [0.1, -0.2, 0.5, 0.0]], "positions": "last_prompt"}),
        ("two", {"strength": [0.4, -0.4], "scale": "absolute", "norm_preserving": True, "positions": (1, 6)}),
    ],
)
def test_the_bank_adds_what_the_hooks_add_in_every_scale_and_with_two_vectors_at_a_site(
    tiny_llama, vectors, block
):
    first = _vector(tiny_llama, 3, sites=("L1.resid_post", "L2.resid_pre"))
    second = _vector(tiny_llama, 4, sites=("L1.resid_post",))
    steered = first if vectors == "one" else [first, second]
    inputs = tokenize_for_generate(tiny_llama, PADDED)
    with steer(tiny_llama, steered, **block):
        expected = _greedy(tiny_llama, inputs)
        expected_logits = tiny_llama.hf(**tokenize(tiny_llama, PADDED)).logits
    with install_steering_bank(tiny_llama, ["L1.resid_post", "L2.resid_pre"]):
        with steer(tiny_llama, steered, **block):
            assert torch.equal(_greedy(tiny_llama, inputs), expected)
            assert torch.equal(tiny_llama.hf(**tokenize(tiny_llama, PADDED)).logits, expected_logits)


def test_forward_wrappers_stack_and_come_off_in_any_order(tiny_llama):
    layer = tiny_llama.hf.model.layers[0]
    batch = tokenize(tiny_llama, PADDED)
    plain = tiny_llama.hf(**batch).logits
    adds = [wrap_forward(layer, lambda inner, *a, k=k, **kw: inner(*a, **kw) + k) for k in (1.0, 2.0, 4.0)]
    assert wrappers_of(layer) == adds[::-1]
    shifted = tiny_llama.hf(**batch).logits
    unwrap_forward(layer, adds[1])  # the middle one
    assert wrappers_of(layer) == [adds[2], adds[0]]
    unwrap_forward(layer, adds[0])  # now the innermost: the outer one wraps the class's forward
    unwrap_forward(layer, adds[2])
    assert "forward" not in layer.__dict__
    assert torch.equal(tiny_llama.hf(**batch).logits, plain)
    assert not torch.equal(shifted, plain)


@pytest.mark.slow
def test_compiled_gemma_is_steered_exactly_through_its_bank(gemma):
    """The real model: a few tokens, one layer and one strength per block, so the compile stays
    small (the graphs with and without a block then have the same rows; per-row strengths, which
    compile the model twice more, are checked compiled on the tiny gemma3 and llama above)."""
    inputs = tokenize_for_generate(gemma, ["My first week at the new job has been", "The food was"])
    vector = _vector(gemma, sites=("L6.resid_post",))
    strength = 0.25
    plain = _greedy(gemma, inputs, tokens=4)
    with steer(gemma, vector, strength=strength, positions="generated"):
        expected = _greedy(gemma, inputs, tokens=4)
    assert not torch.equal(expected, plain)
    counter = CompileCounterWithBackend("aot_eager")
    hf = gemma.hf
    try:
        with install_steering_bank(gemma, vector.sites):
            hf.forward = torch.compile(hf.forward, backend=counter, dynamic=None)
            with steer(gemma, vector, strength=strength, positions="generated"):
                assert torch.equal(_greedy(gemma, inputs, tokens=4), expected)
            assert torch.equal(_greedy(gemma, inputs, tokens=4), plain)
            warmed_up = counter.frame_count
            with torch._dynamo.config.patch(error_on_recompile=True):
                with steer(gemma, vector, strength=-0.3, positions="all"):
                    _greedy(gemma, inputs, tokens=4)
            assert counter.frame_count == warmed_up > 0
    finally:
        del hf.forward  # the session's model, uncompiled again
    assert torch.equal(_greedy(gemma, inputs, tokens=4), plain)
