"""The shared-prefix KV cache gives the plain left-padded batch's tokens and logits, keeps the
prompt / generated bookkeeping of edits, and stands aside where a sliding window could cut; so do
prompts cached up to their last token for many last-token edits."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from steerscope.anatomy import anatomy_of
from steerscope.capture import tokenize
from steerscope.data.arithmetic import arithmetic_problems, few_shot_prompt
from steerscope.errors import InputError
from steerscope.intervene import intervene
from steerscope.model import Model
from steerscope.prefix_cache import cache_all_but_last, common_prefix_length, prefixed_batch
from steerscope.probes.lm_metrics import greedy_continuations
from steerscope.steering.generation import generate_solutions
from steerscope.tiny import char_tokenizer, tiny_config, tiny_model

PREFIX = "Solve each one. 1+1=2. 2+2=4. 3+3=6.\n"
PROMPTS = [PREFIX + "Q: 4+4=", PREFIX + "Q: 12+30=", PREFIX + "Q: 7="]


def tiny_gemma_with_window(window: int) -> Model:
    """Tiny Gemma 3 (sliding layers with `window`, a global layer every fourth)."""
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("gemma3", len(tokenizer), sliding_window=window))
    hf.eval()
    return Model(hf=hf, tokenizer=tokenizer, anatomy=anatomy_of(hf), source="tiny-gemma3")


def greedy(
    model: Model, prompts: list[str], shared: bool, n: int = 6, groups: list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(generated tokens [batch, n], logits [n, batch, vocab]) with or without the shared prefix."""
    if shared:
        prefixed = prefixed_batch(model, prompts, n, groups=groups)
        assert prefixed is not None
        batch = {**prefixed.inputs, "past_key_values": prefixed.cache}
    else:
        batch = tokenize(model, prompts)
        del batch["position_ids"]
    out = model.hf.generate(
        **batch,
        max_new_tokens=n,
        do_sample=False,
        pad_token_id=model.tokenizer.pad_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    width = batch["input_ids"].shape[1]
    return out.sequences[:, width:], torch.stack(out.logits)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_shared_prefix_gives_the_plain_batch_tokens_and_logits(name):
    model = tiny_model("llama") if name == "llama" else tiny_gemma_with_window(128)
    with torch.no_grad():
        plain_tokens, plain_logits = greedy(model, PROMPTS, shared=False)
        shared_tokens, shared_logits = greedy(model, PROMPTS, shared=True)
    assert torch.equal(shared_tokens, plain_tokens)
    torch.testing.assert_close(shared_logits, plain_logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_groups_with_their_own_prefixes_give_the_plain_batch_tokens_and_logits(name):
    """Prompts asked two ways in one batch: each group's prefix runs once (the two together, the
    shorter right-padded), each row continues its own."""
    model = tiny_model("llama") if name == "llama" else tiny_gemma_with_window(128)
    other = "Work it out step by step, then say the answer.\n"
    prompts = PROMPTS + [other + p for p in PROMPTS[:2]]
    groups = ["short"] * 3 + ["long"] * 2
    with torch.no_grad():
        plain_tokens, plain_logits = greedy(model, prompts, shared=False)
        grouped_tokens, grouped_logits = greedy(model, prompts, shared=True, groups=groups)
    assert torch.equal(grouped_tokens, plain_tokens)
    torch.testing.assert_close(grouped_logits, plain_logits, atol=1e-5, rtol=1e-5)
    prefixed = prefixed_batch(model, prompts, 6, groups=groups)
    rows = model.tokenizer(prompts).input_ids
    assert prefixed.cache.prefix_length == common_prefix_length(rows[3:])  # the longer prefix
    assert prefixed_batch(model, prompts, 6) is None  # no prefix common to both ways


def test_the_prefix_is_every_prompt_s_common_start_and_the_suffixes_are_left_padded(tiny_llama):
    prefixed = prefixed_batch(tiny_llama, PROMPTS, 4)
    rows = tiny_llama.tokenizer(PROMPTS).input_ids
    shared = common_prefix_length(rows)
    assert prefixed.cache.prefix_length == shared == 1 + len(PREFIX + "Q: ")  # BOS, one token per character
    mask = prefixed.inputs["attention_mask"]
    assert mask[:, :shared].all()
    for i, row in enumerate(rows):
        assert mask[i].sum() == len(row)  # pads only between the prefix and a shorter suffix
        assert prefixed.inputs["input_ids"][i][mask[i].bool()].tolist() == row


def test_edits_see_the_suffix_as_prompt_and_only_new_tokens_as_generated(tiny_llama):
    """A large edit at generated tokens gives the same tokens with and without the shared prefix
    (it would change the suffix, and so the answer, if the suffix counted as generated)."""
    direction = torch.randn(tiny_llama.anatomy.d_model, generator=torch.Generator().manual_seed(1))
    seen = []

    def push(act, tokens):
        seen.append((int(tokens.is_prompt.sum()), int(tokens.is_generated.sum())))
        return act + 4.0 * direction * tokens.is_generated[..., None]

    results = {}
    with torch.no_grad():
        for shared in (False, True):
            seen.clear()
            with intervene(tiny_llama, {"L1.resid_post": push}):
                results[shared] = greedy(tiny_llama, PROMPTS, shared)[0]
            calls = list(seen)
        unsteered = greedy(tiny_llama, PROMPTS, shared=False)[0]
    assert torch.equal(results[True], results[False])
    assert not torch.equal(results[False], unsteered)  # the edit changes the answers
    lengths = [len(r) for r in tiny_llama.tokenizer(PROMPTS).input_ids]
    prefix = common_prefix_length(tiny_llama.tokenizer(PROMPTS).input_ids)
    assert calls[0] == (prefix, 0)  # the prefix alone
    assert calls[1] == (sum(lengths) - 3 * prefix, 0)  # every suffix token is prompt
    assert calls[2] == (0, 3)  # then one generated token per row


def test_no_shared_prefix_where_a_sliding_window_could_cut(tiny_gemma):
    assert tiny_gemma.hf.config.sliding_window == 8
    assert prefixed_batch(tiny_gemma, PROMPTS, 4) is None
    assert prefixed_batch(tiny_gemma_with_window(128), PROMPTS, 4) is not None
    assert prefixed_batch(tiny_gemma_with_window(64), PROMPTS, 64) is None  # prompts + new tokens > 64


def test_no_shared_prefix_for_one_prompt_or_a_short_common_start(tiny_llama):
    assert prefixed_batch(tiny_llama, PROMPTS[:1], 4) is None
    assert prefixed_batch(tiny_llama, ["Q: 1+1=", "Q: 2+2="], 4) is None


def test_solutions_with_and_without_the_shared_prefix_are_the_same(tiny_llama):
    prompts = [p + s for p in PROMPTS for s in ("", " ")]
    kwargs = dict(answers=[0] * len(prompts), max_new_tokens=8, batch_size=4)
    plain = generate_solutions(tiny_llama, prompts, share_prefix=False, **kwargs)
    shared = generate_solutions(tiny_llama, prompts, share_prefix=True, **kwargs)
    sampled = [
        generate_solutions(tiny_llama, prompts, n_samples=2, temperature=1.0, share_prefix=s, **kwargs)
        for s in (False, True)
    ]
    assert [g[0].text for g in shared] == [g[0].text for g in plain]
    assert [[g.text for g in gs] for gs in sampled[1]] == [[g.text for g in gs] for gs in sampled[0]]


def test_gemma_few_shot_prompts_with_the_shared_prefix_match_the_plain_batch(gemma):
    """One prefix for the standard prompts; then standard and brief prompts in one batch, each
    style continuing its own prefix."""
    problems = arithmetic_problems(3, seed=0)
    prompts = [few_shot_prompt(p) for p in problems]
    asked_two_ways = prompts + [few_shot_prompt(p, "brief") for p in problems[:2]]
    groups = ["standard"] * 3 + ["brief"] * 2
    with torch.no_grad():
        plain_tokens, plain_logits = greedy(gemma, prompts, shared=False, n=8)
        shared_tokens, shared_logits = greedy(gemma, prompts, shared=True, n=8)
        two_plain_tokens, two_plain_logits = greedy(gemma, asked_two_ways, shared=False, n=8)
        grouped_tokens, grouped_logits = greedy(gemma, asked_two_ways, shared=True, n=8, groups=groups)
    assert torch.equal(shared_tokens, plain_tokens)
    torch.testing.assert_close(shared_logits, plain_logits, atol=1e-3, rtol=1e-4)
    assert torch.equal(grouped_tokens, two_plain_tokens)
    torch.testing.assert_close(grouped_logits, two_plain_logits, atol=1e-3, rtol=1e-4)


def last_token_push(model: Model, strength: float):
    """An edit that moves only the last prompt token (as SpARE's and difference of means' do)."""
    direction = torch.randn(model.anatomy.d_model, generator=torch.Generator().manual_seed(2))

    def push(act, tokens):
        return act + strength * direction * tokens.is_last_prompt[..., None]

    return {"L1.resid_post": push}


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_prompts_cached_to_their_last_token_give_the_plain_answers_under_last_token_edits(name):
    model = tiny_model("llama") if name == "llama" else tiny_gemma_with_window(128)
    prompts = PROMPTS + ["Q: 5+5=", "1+2+3=", PREFIX]  # left padding in both batches of 3
    cached = cache_all_but_last(model, prompts, max_new_tokens=6, batch_size=3)
    assert [b.cache.prefix_length for b in cached.batches] == [
        max(len(r) for r in model.tokenizer(prompts[i : i + 3]).input_ids) - 1 for i in (0, 3)
    ]
    outputs = {}
    for strength in (0.0, 6.0):
        for reuse in (None, cached):
            with intervene(model, last_token_push(model, strength)):
                outputs[strength, reuse is not None] = greedy_continuations(
                    model, prompts, 6, 3, cached=reuse
                )
    assert outputs[6.0, True] == outputs[6.0, False]
    assert outputs[0.0, True] == outputs[0.0, False] == greedy_continuations(model, prompts, 6, 3)
    assert outputs[6.0, False] != outputs[0.0, False]  # the edit changes answers
    # the cache is copied for each generation, so it serves the next one unchanged
    assert [b.cache.get_seq_length() for b in cached.batches] == [
        b.cache.prefix_length for b in cached.batches
    ]


def test_prompts_cached_to_their_last_token_refuse_other_prompts_and_stand_aside_for_a_window(tiny_llama):
    cached = cache_all_but_last(tiny_llama, PROMPTS, 4, batch_size=2)
    with pytest.raises(InputError, match="other prompts or another batch size"):
        greedy_continuations(tiny_llama, PROMPTS[:2], 4, 2, cached=cached)
    with pytest.raises(InputError, match="other prompts or another batch size"):
        greedy_continuations(tiny_llama, PROMPTS, 4, 3, cached=cached)
    assert cache_all_but_last(tiny_gemma_with_window(64), PROMPTS, 64, batch_size=2) is None
