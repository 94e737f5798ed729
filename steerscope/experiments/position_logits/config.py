"""position-logits' settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, NonEmpty, Range, Window


@dataclass
class PositionLogitsConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_prompts=4, window=48, distances=list(range(0, 48, 3)))
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_prompts": (("text", "eval"),)}
    n_prompts: Count = 16
    # tokens per prompt, BOS included, at most the text data's window (retokenised: +-1)
    window: Window = 64
    distances: Annotated[list[Annotated[int, Range(0)]], NonEmpty()] = field(
        default_factory=lambda: list(range(0, 64, 2))
    )
    share_distance: bool = True  # a(i - j) shared by all prompts of a head; False: fitted per prompt
    random_init: bool = True
    scatter_points: Count = 2000  # per scatter plot

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """`window - 1` tokens (at most the data's window), without BOS: the tokenizer adds it back."""
        return min(self.window, data_window) - 1, False
