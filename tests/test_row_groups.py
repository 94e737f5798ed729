"""Several edit settings as rows of one batch give each setting the answers it gives alone."""

import pytest
import torch
from test_prefix_cache import PROMPTS, last_token_push, tiny_gemma_with_window
from test_spare import make_selection, random_sae

from steerscope.errors import InputError
from steerscope.intervene import intervene
from steerscope.model import Model
from steerscope.prefix_cache import cache_all_but_last
from steerscope.probes.knowledge import answer_greedy, answer_greedy_in_settings
from steerscope.probes.lm_metrics import greedy_continuations, greedy_continuations_in_settings
from steerscope.row_groups import interleaved_edits
from steerscope.steering.spare import spare_edits
from steerscope.tiny import tiny_model

# 7 prompts in batches of 3: two full batches and a remainder of one, each left-padded
MORE_PROMPTS = PROMPTS + ["Q: 5+5=", "1+2+3=", "Q: 9+1=", PROMPTS[0][:30]]


def edit_settings(model: Model) -> list[dict]:
    """No edit, last-token pushes at one and at two sites, and a SpARE edit of a random SAE."""
    d_model = model.anatomy.d_model
    sae = random_sae(d=d_model, d_sae=32, seed=4)
    selection = make_selection(
        torch.arange(0, 6), torch.arange(6, 12), torch.full((32,), 3.0), torch.full((32,), 3.0)
    )
    two_sites = {
        **last_token_push(model, -4.0),
        "L0.resid_post": last_token_push(model, 5.0)["L1.resid_post"],
    }
    return [
        {},
        last_token_push(model, 6.0),
        two_sites,
        spare_edits({"L1.resid_post": sae}, {"L1.resid_post": selection}, "memory", alpha=3.0),
        spare_edits({"L1.resid_post": sae}, {"L1.resid_post": selection}, "context", alpha=1.0),
    ]


@pytest.mark.parametrize("name", ["llama", "gemma3"])
def test_settings_run_as_rows_of_one_batch_give_the_answers_each_gives_alone(name):
    model = tiny_model("llama") if name == "llama" else tiny_gemma_with_window(128)
    cached = cache_all_but_last(model, MORE_PROMPTS, max_new_tokens=6, batch_size=3)
    settings = edit_settings(model)
    alone = []
    for edits in settings:
        with intervene(model, edits):
            alone.append(greedy_continuations(model, MORE_PROMPTS, 6, 3, cached=cached))
    # 7 rows per call: settings of one batch split across calls, a remainder batch with 5 in one
    together = greedy_continuations_in_settings(model, cached, settings, 6, max_rows=7)
    assert together == alone
    assert len({tuple(texts) for texts in alone}) == len(settings)  # every setting answers otherwise
    first_lines = [[text.split("\n", 1)[0].strip() for text in texts] for texts in alone]
    assert answer_greedy_in_settings(model, cached, settings, 6) == first_lines
    # the cached batches serve the next call unchanged
    assert [b.cache.get_seq_length() for b in cached.batches] == [
        b.cache.prefix_length for b in cached.batches
    ]


def newline_at_second_token(model: Model) -> dict:
    """An edit of the last layer that makes a row's second generated token a line break (on
    tiny llama, for the last four of `MORE_PROMPTS`)."""
    newline = model.tokenizer("\n", add_special_tokens=False).input_ids[-1]
    direction = model.hf.lm_head.weight[newline].detach() * 100

    def push(act, tokens):
        second = tokens.is_generated & (tokens.positions == tokens.prompt_lengths[:, None])
        return act + direction * second[..., None]

    return {f"L{model.anatomy.n_layers - 1}.resid_post": push}


def test_answers_stop_once_every_first_line_has_ended_and_keep_it(tiny_llama):
    calls = []
    tiny_llama.hf.model.register_forward_hook(lambda *args: calls.append(1))
    with intervene(tiny_llama, newline_at_second_token(tiny_llama)):
        full = greedy_continuations(tiny_llama, MORE_PROMPTS[3:], 12, 4)
        n_full, calls[:] = len(calls), []
        answers = answer_greedy(tiny_llama, MORE_PROMPTS[3:], 12, 4)
    assert all("\n" in text for text in full)
    assert answers == [text.split("\n", 1)[0].strip() for text in full]
    assert (n_full, len(calls)) == (12, 2)  # every row ends its first line at its second token


def test_interleaved_edits_refuse_a_batch_that_does_not_hold_every_setting(tiny_llama):
    edits = interleaved_edits([last_token_push(tiny_llama, 1.0), {}])
    with intervene(tiny_llama, edits), pytest.raises(InputError, match="does not hold 2 settings"):
        greedy_continuations(tiny_llama, PROMPTS, 2, 3)
