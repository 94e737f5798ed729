import torch

import steerscope as ss
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.steering import Fingerprint, SteeringVector, steer
from steerscope.steering.apply import token_selection

PROMPTS = ["hello there, friend", "hi", "a b c"]


def test_one_token_info_per_forward_call_is_shared_by_every_hook(tiny_llama):
    seen: list[tuple[int, ss.TokenInfo]] = []
    computed = []

    def record(layer):
        def edit(act, tokens):
            seen.append((layer, tokens))
            tokens.once("test.count", lambda t: computed.append(layer) or len(computed))

        return edit

    inputs = tokenize_for_generate(tiny_llama, PROMPTS)
    sites = {f"L{i}.resid_post": record(i) for i in range(4)} | {"L2.q_rope.h1": record(-1)}
    with ss.intervene(tiny_llama, sites):
        tiny_llama.generate(**inputs, max_new_tokens=3, do_sample=False)
    calls = [seen[i : i + 5] for i in range(0, len(seen), 5)]
    assert len(calls) == 3
    for call in calls:
        assert len({id(tokens) for _, tokens in call}) == 1
    assert len({id(call[0][1]) for call in calls}) == 3
    assert computed == [0, 0, 0]  # once per call, by the first hook that asked


def test_fields_are_computed_once_and_moved_once_per_device():
    tokens = ss.TokenInfo.of_call(
        torch.tensor([[False, True, True, True], [True, True, True, True]]), 2, 2, torch.tensor([2, 3])
    )
    assert torch.equal(tokens.positions, torch.tensor([[1, 2], [2, 3]]))
    assert tokens.is_prompt is tokens.is_prompt
    assert torch.equal(tokens.is_prompt, torch.tensor([[True, False], [True, False]]))
    assert torch.equal(tokens.is_last_prompt, torch.tensor([[True, False], [True, False]]))
    assert torch.equal(tokens.is_generated, torch.tensor([[False, True], [False, True]]))
    moved = tokens.to(torch.device("meta"))
    assert moved is tokens.to(torch.device("meta")) and moved.positions.device.type == "meta"
    assert tokens.to(torch.device("cpu")) is tokens


def test_an_integer_mask_or_none_gives_the_fields_a_bool_mask_gives():
    bool_mask = torch.tensor([[False, True, True, True], [True, True, True, True]])
    as_bool = ss.TokenInfo.of_call(bool_mask, 2, 2, torch.tensor([2, 3]))
    as_long = ss.TokenInfo.of_call(bool_mask.long(), 2, 2, torch.tensor([2, 3]))
    for name in ("positions", "is_real", "is_prompt", "is_generated", "is_last_prompt"):
        assert torch.equal(getattr(as_long, name), getattr(as_bool, name)), name
    padded_last = ss.TokenInfo.of_call(torch.tensor([[1, 1, 0]]), 1, 2, torch.tensor([2]))
    assert padded_last.is_real.tolist() == [[False]]
    assert padded_last.positions.tolist() == [[-1]]
    unmasked = ss.TokenInfo.of_call(None, 2, 3, torch.tensor([3, 3]))
    assert unmasked.positions.tolist() == [[3, 4], [3, 4]] and bool(unmasked.is_real.all())
    assert unmasked.is_real.shape == (2, 2)
    assert unmasked.is_generated.tolist() == [[True, True], [True, True]]


def test_steering_masks_are_made_once_per_call(tiny_llama, monkeypatch):
    g = torch.Generator().manual_seed(0)
    vector = SteeringVector(
        {f"L{i}.resid_post": torch.randn(64, generator=g) for i in range(4)}, Fingerprint.of(tiny_llama)
    )
    made = []

    def counting(positions, tokens):
        made.append(positions)
        return token_selection(positions, tokens)

    monkeypatch.setattr("steerscope.steering.apply.token_selection", counting)
    batch = tokenize(tiny_llama, PROMPTS)
    with steer(tiny_llama, vector, strength=0.5, positions="prompt"):
        tiny_llama.hf(**batch)
    assert made == ["prompt"]


def test_call_mask_keeps_a_2d_mask_and_drops_a_4d_one():
    from steerscope.tokens import call_mask

    mask = torch.tensor([[0, 1, 1]])
    cpu = torch.device("cpu")
    assert call_mask(mask, cpu) is mask
    assert call_mask(None, cpu) is None
    assert call_mask(torch.ones(1, 1, 3, 3, dtype=torch.bool), cpu) is None


def test_past_length_reads_a_2d_mask_before_the_cache_and_the_cache_otherwise():
    from types import SimpleNamespace

    from transformers import DynamicCache

    from steerscope.tokens import past_length

    cache = DynamicCache()
    cache.update(torch.zeros(1, 1, 3, 4), torch.zeros(1, 1, 3, 4), 0)
    assert past_length(torch.ones(1, 7), 2, cache) == 5  # the mask covers cache and call
    assert past_length(torch.ones(1, 1, 2, 7), 2, cache) == 3  # a 4-D mask is not read
    assert past_length(None, 2, cache) == 3
    assert past_length(None, 2, None) == 0
    transformer_lens_entry = SimpleNamespace(past_keys=torch.zeros(1, 4, 2, 8))
    assert past_length(None, 1, transformer_lens_entry) == 4


def test_token_selection_all_is_every_token_and_the_other_modes_skip_pads():
    tokens = ss.TokenInfo.of_call(torch.tensor([[0, 1, 1], [1, 1, 1]]), 3, 0, torch.tensor([2, 3]))
    assert token_selection("all", tokens).tolist() == [[True, True, True], [True, True, True]]
    assert token_selection("prompt", tokens).tolist() == [[False, True, True], [True, True, True]]
