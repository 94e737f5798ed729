"""Fisher scores for the ToM-sensitivity probe (Wu et al. 2025, arXiv 2504.04238): one set from ToM
stories (loss on the belief answer only) and one from generic text windows (full LM loss), shared
by `tom-sensitivity` and `rope` through the disk cache."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from steerscope.data.suite import TextData, TomData
from steerscope.model import Model
from steerscope.probes.fisher import LossSample, cached_fisher_scores


def tom_fisher_samples(model: Model, items: Sequence[Any]) -> list[LossSample]:
    """Story + the first accepted belief answer; only the answer's tokens count in the loss."""
    samples = []
    for item in items:
        story = model.tokenizer(item.story).input_ids
        answer = model.tokenizer(item.answers[0], add_special_tokens=False).input_ids
        ids = torch.tensor(story + answer)
        mask = torch.zeros(len(ids), dtype=torch.bool)
        mask[len(story) :] = True
        samples.append(LossSample(ids, mask))
    return samples


def tom_and_generic_fisher(
    model: Model, tom: TomData, text: TextData, n: int, window: int | None, seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Fisher scores on `n` "fisher" ToM items (answer loss) and `n` "fisher" text windows of
    `window` tokens (default: the text's) with BOS, from the shared disk cache (keyed by the
    samples themselves): every experiment asking the same question reuses them."""
    items = tom.items("fisher", n, seed)
    windows = text.windows(model, n, window, seed, split="fisher", bos=True)
    tom_f = cached_fisher_scores(model, tom_fisher_samples(model, items), {"data": "tom", "seed": seed})
    generic_f = cached_fisher_scores(
        model, [LossSample.all_positions(torch.tensor(w)) for w in windows], {"data": "generic"}
    )
    return tom_f, generic_f
