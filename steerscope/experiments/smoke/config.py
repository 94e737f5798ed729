"""smoke's settings and the prompts it reads."""

from __future__ import annotations

from dataclasses import dataclass

from steerscope.registry import ExperimentConfig
from steerscope.settings import Layer, NewTokens

PROMPTS = ["The capital of France is", "Sally puts the ball in the basket."]


@dataclass
class SmokeConfig(ExperimentConfig):
    layer: Layer | None = None  # steered layer; default: the middle layer
    relative_strength: float = 0.5  # added vector norm / residual norm at the site
    max_new_tokens: NewTokens = 12
