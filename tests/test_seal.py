"""SEAL-style calibration: thoughts classified by keywords, each represented by the residual at the
delimiter before it, and the step-minus-reflection vector."""

from __future__ import annotations

import pytest
import torch

from steerscope.capture import capture
from steerscope.errors import InputError
from steerscope.steering.seal import classify_thought, seal_vector, thought_counts, thought_representations
from steerscope.tiny import tiny_model

PROMPT = "q<think>"
COMPLETION = "\nab\nwait, check\nanother way\ncd\n</think>7\nx"


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama", extra_tokens=("<think>", "</think>"))


@pytest.mark.parametrize(
    ("thought", "kind"),
    [
        ("12 + 5 = 17.", "step"),
        ("wait, check: 17 - 5 = 12.", "check"),
        ("Wait, let me verify this.", "check"),
        ("wait, check: 18 - 5 = 13, not 12, so 12 + 5 = 18 is wrong: 12 + 5 = 17.", "check"),
        ("wait, another way: 12 + 2 = 14, 14 + 3 = 17.", "detour"),
        ("Alternatively, count on a number line.", "detour"),
        ("", "step"),
    ],
)
def test_thoughts_are_classified_by_keywords_detours_first(thought, kind):
    assert classify_thought(thought) == kind


def test_thought_counts_stop_at_think_close():
    text = "\n1 + 1 = 2.\nwait, check: 2 - 1 = 1.\nwait, another way: 1 + 1 = 2.\n</think> wait"
    assert thought_counts(text, "\n") == {"step": 1, "check": 1, "detour": 1}


def test_each_delimiter_is_labelled_by_the_thought_after_it(model):
    reps = thought_representations(model, [(PROMPT, COMPLETION)], layer=2, delimiter="\n")
    # delimiters before "ab", "cd" and </think> are steps; one check, one detour; none after </think>
    assert {k: len(v) for k, v in reps.items()} == {"step": 3, "check": 1, "detour": 1}
    full = capture(model, [PROMPT + COMPLETION], "L2.resid_post", progress=False)
    ids = full.token_ids[0].tolist()
    newline = model.tokenizer.convert_tokens_to_ids("\n")
    delimiters = [i for i, t in enumerate(ids) if t == newline][:5]
    acts = full["L2.resid_post"][0]
    torch.testing.assert_close(reps["step"], acts[[delimiters[0], delimiters[3], delimiters[4]]])
    torch.testing.assert_close(reps["check"][0], acts[delimiters[1]])
    torch.testing.assert_close(reps["detour"][0], acts[delimiters[2]])


def test_seal_vector_is_steps_minus_checks_and_detours(model):
    traces = [(PROMPT, COMPLETION), ("qq<think>", "\nwait, check\nab\n</think>1")]
    reps = thought_representations(model, traces, layer=1, delimiter="\n")
    vector = seal_vector(model, traces, layer=1, delimiter="\n")
    expected = reps["step"].mean(0) - torch.cat([reps["check"], reps["detour"]]).mean(0)
    torch.testing.assert_close(vector.directions["L1.resid_post"], expected)
    assert vector.provenance["n_thoughts"] == {"step": 5, "check": 2, "detour": 1}


def test_seal_needs_both_kinds_of_thoughts(model):
    with pytest.raises(InputError, match="check/detour"):
        seal_vector(model, [(PROMPT, "\nab\ncd\n</think>1")], layer=1, delimiter="\n")
    with pytest.raises(InputError, match="</think>"):
        seal_vector(tiny_model("llama"), [(PROMPT, COMPLETION)], layer=1, delimiter="\n")
