"""steer-demo's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, Layer, NewTokens, NonEmpty


@dataclass
class SteerDemoConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_train=16, n_heldout=8, max_new_tokens=12)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_train": (("pairs", "train"),),
        "n_heldout": (("pairs", "heldout"),),
    }
    n_train: Count = 32
    n_heldout: Count = 16
    strengths: Annotated[list[float], NonEmpty()] = field(
        default_factory=lambda: [-0.25, -0.1, 0.0, 0.1, 0.25]
    )
    max_new_tokens: NewTokens = 20
    layer: Layer | None = None  # default: the best held-out separation, last layer excluded
    # prompts to generate from; default: the data's neutral prompts
    prompts: Annotated[list[str], NonEmpty()] | None = None
