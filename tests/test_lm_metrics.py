import math

import pytest
import torch
import torch.nn.functional as F

from steerscope.errors import InputError
from steerscope.probes.lm_metrics import continuation_logprobs, perplexity

PROMPTS = ["hello there", "hi", "abc"]
CONTINUATIONS = [" x", " yz", "q"]


def _by_hand(model, prompt, continuation):
    head = model.tokenizer(prompt).input_ids
    tail = model.tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logprobs = F.log_softmax(model.hf(torch.tensor([head + tail])).logits[0], -1)
    return sum(logprobs[len(head) - 1 + j, t].item() for j, t in enumerate(tail))


def test_continuation_logprobs_equal_unbatched_scoring_by_hand(tiny):
    scores = continuation_logprobs(tiny, PROMPTS, CONTINUATIONS, batch_size=2)
    expected = torch.tensor([_by_hand(tiny, p, c) for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)])
    assert torch.allclose(scores, expected, atol=1e-4)


def test_perplexity_is_exp_of_mean_next_token_loss(tiny_llama):
    windows = [list(range(5, 25)), list(range(30, 50)), list(range(60, 80))]
    losses = []
    for w in windows:
        ids = torch.tensor([w])
        with torch.no_grad():
            logits = tiny_llama.hf(ids).logits[0]
        losses.append(F.cross_entropy(logits[:-1], ids[0, 1:], reduction="sum").item())
    expected = math.exp(sum(losses) / (3 * 19))
    assert perplexity(tiny_llama, windows, batch_size=2) == pytest.approx(expected, rel=1e-5)


def test_metrics_reject_bad_input(tiny_llama):
    with pytest.raises(InputError, match="2 prompts and 1 continuations"):
        continuation_logprobs(tiny_llama, ["a", "b"], [" c"])
    with pytest.raises(InputError, match="same length"):
        perplexity(tiny_llama, [[1, 2, 3], [1, 2]], batch_size=2)
