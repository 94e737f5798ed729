"""Score a model on Theory-of-Mind items without sampling, plus the paper's greedy first-word match.

Margin = log p(correct | story) - log p(foil | story), over full answer words with their leading
space; an item is right when its margin is positive. False-belief and true-belief items are
reported separately: a model that ignores beliefs and tracks reality scores well on true-belief
controls and badly on false-belief stories.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerscope.data.tom import TomItem
from steerscope.probes.lm_metrics import continuation_logprobs, greedy_continuations


def _summary(margins: torch.Tensor, matches: torch.Tensor, prefix: str = "") -> dict[str, float]:
    if margins.numel() == 0:
        return {}
    return {
        f"{prefix}acc": (margins > 0).float().mean().item(),
        f"{prefix}margin": margins.mean().item(),
        f"{prefix}greedy_match": matches.float().mean().item(),
    }


def greedy_first_words(
    model: Any, stories: Sequence[str], batch_size: int = 16, max_new_tokens: int = 3
) -> list[str]:
    """The first word of each story's greedy continuation (Wu et al.'s second metric)."""
    words = []
    for text in greedy_continuations(model, stories, max_new_tokens, batch_size):
        parts = text.split()
        words.append(parts[0].strip(".,;:!?\"'").lower() if parts else "")
    return words


def tom_scores(
    model: Any, items: Sequence[TomItem], batch_size: int = 16, greedy: bool = True
) -> dict[str, float]:
    """Accuracy, mean margin and greedy match over all items and per belief condition.

    Keys: `acc`, `margin`, `greedy_match`, and the same prefixed `fb_` (false belief) and `tb_`
    (true belief); `n`. Without `greedy`, the match keys are NaN.
    """
    stories = [item.story for item in items]
    correct = continuation_logprobs(model, stories, [item.correct for item in items], batch_size)
    foil = continuation_logprobs(model, stories, [item.foil for item in items], batch_size)
    margins = correct - foil
    if greedy:
        words = greedy_first_words(model, stories, batch_size)
        matches = torch.tensor(
            [w == item.correct.strip().lower() for w, item in zip(words, items, strict=True)]
        )
    else:
        matches = torch.full((len(items),), float("nan"))
    false_belief = torch.tensor([item.false_belief for item in items])
    return {
        **_summary(margins, matches),
        **_summary(margins[false_belief], matches[false_belief], "fb_"),
        **_summary(margins[~false_belief], matches[~false_belief], "tb_"),
        "n": len(items),
    }
