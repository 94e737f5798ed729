"""position-logits' phases: the generic prompts, the additive fit on the trained model, and the same fit
on a randomly initialised copy; each fit summarised as medians over heads."""

from __future__ import annotations

import statistics
from typing import Any

import torch

from steerscope.context import ExperimentContext
from steerscope.data.suite import TextData
from steerscope.experiments.position_logits.config import PositionLogitsConfig
from steerscope.model import ModelLike
from steerscope.probes.position_logits import PositionLogits, position_logits, randomly_initialised


def generic_prompts(model: ModelLike, text: TextData, n: int, window: int, seed: int) -> list[str]:
    """`n` windows of `window` tokens of the "eval" split, as text."""
    windows = text.windows(model, n, window, seed, split="eval")
    return [model.tokenizer.decode(ids) for ids in windows]


def head_rows(result: PositionLogits) -> list[dict[str, Any]]:
    """One row per (layer, head): r, within-query r and virtual-distance r."""
    return [
        {
            "layer": layer,
            "head": head,
            "r": float(result.r[row, head]),
            "r_within_query": float(result.r_within_query[row, head]),
            "virtual_r": float(result.virtual_r[row, head]),
        }
        for row, layer in enumerate(result.layers)
        for head in range(result.r.shape[1])
    ]


def summarise(result: PositionLogits) -> dict[str, Any]:
    """Medians over heads per layer and overall, for the real and the virtual-distance fits."""
    rows = head_rows(result)

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    def by_layer(values: torch.Tensor) -> list[float]:
        return [statistics.median(row.tolist()) for row in values]

    return {
        "per_head": rows,
        "median_r": median("r"),
        "median_r_by_layer": by_layer(result.r),
        "median_r_within_query": median("r_within_query"),
        "median_r_within_query_by_layer": by_layer(result.r_within_query),
        "virtual": {
            "median_r": median("virtual_r"),
            "median_r_by_layer": by_layer(result.virtual_r),
            "distances": result.distances,
        },
    }


def prompts(config: PositionLogitsConfig, context: ExperimentContext) -> list[str]:
    """`n_prompts` generic windows of the text data's "eval" split."""
    text = context.data.need("text")
    window, _ = config.text_window("n_prompts", text.window)
    found = generic_prompts(context.model, text, config.n_prompts, window, config.seed)
    context.used("text", eval_windows=len(found))
    return found


def fit_trained(config: PositionLogitsConfig, model: ModelLike, prompts: list[str]) -> PositionLogits:
    """The additive fit of every head's attention logits on the trained model."""
    return position_logits(
        model, prompts, distances=config.distances, share_distance=config.share_distance, progress=True
    )


def fit_random_init(
    config: PositionLogitsConfig, model: ModelLike, prompts: list[str]
) -> dict[str, Any] | None:
    """The same fit on a randomly initialised copy of the model, summarised (None: `random_init` off)."""
    if not config.random_init:
        return None
    random_model = randomly_initialised(model, seed=config.seed)
    random = summarise(
        position_logits(
            random_model,
            prompts,
            distances=config.distances,
            share_distance=config.share_distance,
            progress=True,
        )
    )
    del random_model
    return random
