"""Score a model on Theory-of-Mind items without sampling, plus the paper's greedy first-word match.

Margin = log p(answer | story) - log p(foil | story), each over its full continuation (every token
of a multi-token answer, with its leading space); an item is right when its margin is positive.
When an item accepts several answers (or names several foils), the best-scoring answer and the
best-scoring foil are compared. False-belief and true-belief items are reported separately: a
model that ignores beliefs and tracks reality scores well on true-belief controls and badly on
false-belief stories. Items that carry a `kind` are also reported per kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.prefix_cache import CachedPrompts, cache_all_but_last
from steerscope.probes.lm_metrics import (
    cached_option_logprobs,
    continuation_logprobs,
    continuation_tokens,
    greedy_continuations,
)

_PUNCTUATION = ".,;:!?\"'"
#: Tokens generated for the greedy first-word match.
GREEDY_TOKENS = 3


def _summary(margins: torch.Tensor, matches: torch.Tensor, prefix: str = "") -> dict[str, float]:
    if margins.numel() == 0:
        return {}
    return {
        f"{prefix}acc": (margins > 0).float().mean().item(),
        f"{prefix}margin": margins.mean().item(),
        f"{prefix}greedy_match": matches.float().mean().item(),
    }


def _first_word(text: str) -> str:
    parts = text.split()
    return parts[0].strip(_PUNCTUATION).lower() if parts else ""


def greedy_first_words(
    model: ModelLike,
    stories: Sequence[str],
    batch_size: int = 16,
    max_new_tokens: int = GREEDY_TOKENS,
    progress: bool = False,
    cached: CachedPrompts | None = None,
) -> list[str]:
    """The first word of each story's greedy continuation (Wu et al.'s second metric); `cached`:
    the stories run once up to their last token (`greedy_continuations`)."""
    texts = greedy_continuations(model, stories, max_new_tokens, batch_size, progress, cached)
    return [_first_word(text) for text in texts]


def best_logprobs(
    model: ModelLike,
    stories: Sequence[str],
    options: Sequence[Sequence[str]],
    batch_size: int = 16,
    progress: bool = False,
) -> torch.Tensor:
    """[n]: for each story, the highest log p of its full continuation among its `options`."""
    flat = [(i, option) for i, row in enumerate(options) for option in row]
    scores = continuation_logprobs(
        model, [stories[i] for i, _ in flat], [o for _, o in flat], batch_size, progress
    )
    best = torch.full((len(stories),), float("-inf"))
    for (i, _), score in zip(flat, scores, strict=True):
        best[i] = torch.maximum(best[i], score)
    return best


def tom_scores(
    model: ModelLike, items: Sequence[Any], batch_size: int = 16, greedy: bool = True, progress: bool = False
) -> dict[str, Any]:
    """Accuracy, mean margin and greedy match over all items and per belief condition.

    `items` are `TomItem`s or `TomStory`s (anything with `story`, `answers`, `foils`,
    `false_belief`, `kind`). Keys: `acc`, `margin`, `greedy_match`, the same prefixed `fb_` (false
    belief) and `tb_` (true belief), `n`, and `by_kind` ({kind: the same keys and `n`}) when items
    carry kinds. The greedy match compares the first generated word with each answer's first word.
    Without `greedy`, the match keys are NaN. `progress`: a bar per pass over the items.
    """
    for index, item in enumerate(items):
        if not item.answers or not item.foils:
            raise InputError(f"ToM item {index} has no answers or no foils; each needs at least one of both")
    stories = [item.story for item in items]
    options = [list(item.answers) + list(item.foils) for item in items]
    longest = max(len(tail) for tail in continuation_tokens(model, [o for row in options for o in row]))
    cached = cache_all_but_last(as_model(model), stories, max(longest, GREEDY_TOKENS), batch_size)
    if cached is None:  # a sliding window could cut a story: every option runs its story whole
        margins = best_logprobs(
            model, stories, [item.answers for item in items], batch_size, progress
        ) - best_logprobs(model, stories, [item.foils for item in items], batch_size, progress)
    else:
        option_scores = cached_option_logprobs(model, cached, options, progress)
        margins = torch.stack(
            [
                row[: len(item.answers)].max() - row[len(item.answers) :].max()
                for row, item in zip(option_scores, items, strict=True)
            ]
        )
    if greedy:
        words = greedy_first_words(model, stories, batch_size, progress=progress, cached=cached)
        matches = torch.tensor(
            [any(w == _first_word(a) for a in item.answers) for w, item in zip(words, items, strict=True)]
        )
    else:
        matches = torch.full((len(items),), float("nan"))
    false_belief = torch.tensor([item.false_belief for item in items], dtype=torch.bool)
    scores: dict[str, Any] = {
        **_summary(margins, matches),
        **_summary(margins[false_belief], matches[false_belief], "fb_"),
        **_summary(margins[~false_belief], matches[~false_belief], "tb_"),
        "n": len(items),
    }
    kinds = [getattr(item, "kind", None) for item in items]
    if any(kind is not None for kind in kinds):
        scores["by_kind"] = {}
        for kind in dict.fromkeys(k for k in kinds if k is not None):
            chosen = torch.tensor([k == kind for k in kinds])
            scores["by_kind"][kind] = {**_summary(margins[chosen], matches[chosen]), "n": int(chosen.sum())}
    return scores
