"""Thinking-time interventions: steering that stops at `</think>`, steering at thought delimiters,
the thinking budget; checked against explicit position ranges, with and without the KV cache,
on left-padded batches."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from steerscope.errors import InputError
from steerscope.organisms.tokenizer import word_tokenizer
from steerscope.steering.apply import steer
from steerscope.steering.generation import count_tokens, generate_solutions
from steerscope.steering.thinking import (
    THINK_CLOSE,
    ThinkingBudget,
    ThinkingSteer,
    delimiter_ids,
    steer_thinking,
    think_close_id,
)
from steerscope.steering.vector import Fingerprint, SteeringVector
from steerscope.tiny import char_tokenizer, tiny_model

THINK = ("<think>", "</think>")
PROMPTS = ["ab<think>", "abcdef<think>"]
# Forced continuations of equal token counts; `</think>` at different places, delimiters ("\n") around it.
CONTINUATIONS = ["x\ny</think>\nz", "\nx\n</think>yz"]


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", extra_tokens=THINK)


@pytest.fixture(scope="module")
def vector(model):
    direction = torch.randn(model.anatomy.d_model, generator=torch.Generator().manual_seed(1))
    return SteeringVector({"L1.resid_post": direction}, Fingerprint.of(model))


class Force(LogitsProcessor):
    """Makes generate() write the given continuations, whatever the logits."""

    def __init__(self, rows: list[list[int]], prompt_width: int) -> None:
        self.rows, self.prompt_width = rows, prompt_width

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_width
        forced = torch.full_like(scores, float("-inf"))
        for i, row in enumerate(self.rows):
            forced[i, row[step]] = 0.0
        return forced


def ids_of(model, text: str) -> list[int]:
    return model.tokenizer(text, add_special_tokens=False).input_ids


def generated_logits(model, steering, use_cache: bool) -> torch.Tensor:
    """Raw logits of each forced generation step for the padded batch of PROMPTS."""
    batch = model.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    rows = [ids_of(model, c) for c in CONTINUATIONS]
    assert len({len(r) for r in rows}) == 1
    with torch.no_grad(), steering:
        out = model.hf.generate(
            **batch,
            max_new_tokens=len(rows[0]),
            min_new_tokens=len(rows[0]),
            do_sample=False,
            use_cache=use_cache,
            logits_processor=LogitsProcessorList([Force(rows, batch["input_ids"].shape[1])]),
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=model.tokenizer.pad_token_id,
        )
    return torch.stack(out.logits, dim=1)  # [batch, steps, vocab]


def reference_logits(model, vector, strength: float, row: int, positions: list[int]) -> torch.Tensor:
    """One row alone, as a single forward, steered at explicit absolute `positions`."""
    text = PROMPTS[row] + CONTINUATIONS[row]
    ids = model.tokenizer(text, return_tensors="pt")
    n_prompt = len(model.tokenizer(PROMPTS[row]).input_ids)
    with torch.no_grad(), ExitStack() as stack:
        for p in positions:
            stack.enter_context(steer(model, vector, strength, positions=(p, p + 1)))
        logits = model.hf(**ids).logits[0]
    n_steps = len(ids_of(model, CONTINUATIONS[row]))
    return logits[n_prompt - 1 : n_prompt - 1 + n_steps]


def thinking_positions(model, row: int, delimiters_only: bool) -> list[int]:
    """Absolute positions of generated tokens before `</think>` (optionally: delimiters only)."""
    n_prompt = len(model.tokenizer(PROMPTS[row]).input_ids)
    continuation = ids_of(model, CONTINUATIONS[row])
    close = continuation.index(model.tokenizer.convert_tokens_to_ids("</think>"))
    newline = model.tokenizer.convert_tokens_to_ids("\n")
    return [n_prompt + i for i in range(close) if not delimiters_only or continuation[i] == newline]


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("at", ["thinking", "delimiters"])
def test_thinking_steering_matches_explicit_positions(model, vector, use_cache, at):
    strength = 0.8
    steered = generated_logits(
        model, steer_thinking(model, ThinkingSteer(vector, strength, at=at, delimiter="\n")), use_cache
    )
    plain = generated_logits(model, ExitStack(), use_cache)
    for row in range(len(PROMPTS)):
        positions = thinking_positions(model, row, delimiters_only=at == "delimiters")
        expected = reference_logits(model, vector, strength, row, positions)
        torch.testing.assert_close(steered[row], expected, atol=1e-4, rtol=1e-4)
        # The steered steps really differ, and the steps after `</think>` is input do too only
        # through the cache of earlier steered tokens, never through steering of their own.
        n_prompt = len(model.tokenizer(PROMPTS[row]).input_ids)
        changed = (steered[row] - plain[row]).abs().amax(-1) > 1e-4
        first = positions[0] - n_prompt + 1
        assert changed[first] and not changed[:first].any()


def test_zero_strength_changes_nothing(model, vector):
    steered = generated_logits(model, steer_thinking(model, ThinkingSteer(vector, 0.0)), True)
    torch.testing.assert_close(steered, generated_logits(model, ExitStack(), True), atol=0, rtol=0)


def test_thinking_steering_needs_a_think_close_token(vector):
    plain = tiny_model("llama")
    with pytest.raises(InputError, match="</think>"), steer_thinking(plain, ThinkingSteer(vector, 0.5)):
        pass


def test_thinking_steer_validates_its_fields(vector):
    with pytest.raises(InputError, match="at: unknown"):
        ThinkingSteer(vector, 0.5, at="prompt")
    with pytest.raises(InputError, match="scale: unknown"):
        ThinkingSteer(vector, 0.5, scale="huge")


def test_delimiter_ids_are_the_tokens_ending_with_the_delimiter(model):
    newline = model.tokenizer.convert_tokens_to_ids("\n")
    assert delimiter_ids(model.tokenizer, "\n") == [newline]
    with pytest.raises(InputError, match="delimiter"):
        delimiter_ids(model.tokenizer, "")


def test_budget_forces_think_close_as_the_last_thinking_token(model):
    prompts = ["ab<think>", "abcdef<think>", "q<think>"]
    for budget in (1, 3, 5):
        samples = generate_solutions(model, prompts, [0] * 3, max_new_tokens=budget + 3, budget=budget)
        for [g] in samples:
            assert "</think>" in g.text
            assert g.n_thinking is not None and g.n_thinking <= budget
    # Unconstrained, this random model never closes its thinking within the same length.
    free = generate_solutions(model, prompts, [0] * 3, max_new_tokens=8)
    assert all("</think>" not in g.text for [g] in free)


def test_budget_leaves_rows_that_already_closed_alone():
    close = 7
    budget = ThinkingBudget(2, close, prompt_width=1)
    scores = torch.zeros(2, 10)
    ids = torch.tensor([[1, close, 4], [1, 3, 4]])
    out = budget(ids, scores.clone())
    assert torch.equal(out[0], scores[0])
    assert out[1, close] == 0 and torch.isinf(out[1, :close]).all()
    with pytest.raises(InputError, match="at least 1"):
        ThinkingBudget(0, close, 1)


def test_budget_counts_match_count_tokens(model):
    [[g]] = generate_solutions(model, ["ab<think>"], [0], max_new_tokens=6, budget=4)
    assert count_tokens(model.tokenizer, g.text)[1] == g.n_thinking == 4


@pytest.mark.parametrize(
    "tokenizer",
    [
        char_tokenizer(),
        char_tokenizer(THINK),
        char_tokenizer(("</think>x",)),  # a longer token is not `</think>`
        word_tokenizer(["a b <think> c </think> d"]),
    ],
    ids=["none", "single", "longer", "word"],
)
def test_think_close_id_is_the_vocabulary_s_single_token_or_none(tokenizer):
    assert think_close_id(tokenizer) == tokenizer.get_vocab().get(THINK_CLOSE)
