"""Text losses: two texts per row with their shared opening tokens run once, unembedded a chunk at
a time, give each text's loss run whole (left padding, sliding windows, logit soft-capping), and a
model whose head is not known runs its own forward."""

import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from steerscope.anatomy import anatomy_of
from steerscope.data.defaults import natural_suite
from steerscope.model import Model
from steerscope.steering.spare import ANSWER_TEMPLATE, answer_losses
from steerscope.text_losses import logit_head, paired_text_losses, text_losses
from steerscope.tiny import char_tokenizer, tiny_config

# Batches of two: prompts of different lengths (left padding; longer than tiny Gemma's sliding
# window of 8), answers sharing their first tokens, a text opening the other, and rows sharing
# only <bos> (nothing cached), one of them alone in the last batch (an empty prefix batch).
FIRST = ["A much longer prompt about the weather and the sea\n\n", "Dogs bark\n\n", "xyz", "ab", "ef"]
SECOND = ["A much longer prompt about the weather and the sky\n\n", "Dogs bite\n\n", "xyzw", "cd", "gh"]


def assert_paired_equal_whole(model: Model) -> None:
    first, second = paired_text_losses(model, FIRST, SECOND, batch_size=2)
    torch.testing.assert_close(first, text_losses(model, FIRST, batch_size=2), rtol=1e-5, atol=0)
    torch.testing.assert_close(second, text_losses(model, SECOND, batch_size=2), rtol=1e-5, atol=0)


def tiny_from(config_family: str, model_class: type = AutoModelForCausalLM, **overrides) -> Model:
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    config = tiny_config(config_family, len(tokenizer), **overrides)
    hf = (model_class.from_config if model_class is AutoModelForCausalLM else model_class)(config).eval()
    return Model(hf=hf, tokenizer=tokenizer, anatomy=anatomy_of(hf), source=f"tiny-{config_family}")


def test_paired_losses_equal_each_text_run_whole(tiny) -> None:
    assert logit_head(tiny.hf) is not None
    assert_paired_equal_whole(tiny)


def test_paired_losses_apply_gemma_logit_softcapping() -> None:
    model = tiny_from("gemma3", final_logit_softcapping=0.1)
    assert logit_head(model.hf).softcap == 0.1
    assert_paired_equal_whole(model)
    capped = text_losses(model, FIRST)
    model.hf.config.final_logit_softcapping = None
    assert (
        capped - text_losses(model, FIRST)
    ).abs().min() > 1e-3  # the cap moves every loss far past the tolerance


class DoubledLogits(LlamaForCausalLM):
    """A head the known classes do not describe: the logits doubled after lm_head."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out


def test_a_head_it_does_not_know_runs_the_models_own_forward() -> None:
    model = tiny_from("llama", DoubledLogits)
    assert logit_head(model.hf) is None
    assert_paired_equal_whole(model)


def test_spare_answer_losses_match_the_whole_texts_on_gemma(gemma) -> None:
    """Gemma 3 270M: 262k-token vocabulary, sliding windows, its own head; spare's prompts."""
    conflicts = natural_suite().conflicts
    records = conflicts.candidates(1, 0)
    prompts = [conflicts.knowledge_prompt(r, "none", True, 3, 0) for r in records]
    answers = [[r.sub_answer[0] for r in records], [r.org_answer[0] for r in records]]
    for got, chosen in zip(answer_losses(gemma, prompts, *answers), answers, strict=True):
        texts = [ANSWER_TEMPLATE.format(prompt=p, answer=a) for p, a in zip(prompts, chosen, strict=True)]
        torch.testing.assert_close(got, text_losses(gemma, texts), rtol=1e-5, atol=0)
