"""rope's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from steerscope.errors import InputError
from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, Range, Window


@dataclass
class RopeConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_windows=8, n_tom=8, n_fisher=24, random_seeds=1)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_tom": (("tom", "eval"),),
        "n_fisher": (("tom", "fisher"), ("text", "fisher")),
        "n_windows": (("text", "eval"),),
    }
    n_windows: Annotated[int, Range(0)] = 32  # generic text windows measured
    # tokens per generic window before the BOS (at most the text data's window)
    window: Window = 64
    n_tom: Annotated[int, Range(0)] = 32  # ToM evaluation stories measured
    # massive pair: norm > lambda x the head's mean pair norm
    massive_lambda: Annotated[float, Range(0, low_open=True)] = 5.0
    # mask fraction per matrix (Wu et al.'s 0.001%)
    sparsity: Annotated[float, Range(0, 1, low_open=True)] = 1e-5
    random_seeds: Count = 3
    scale: float = 0.0  # W[M] <- mu + scale * (W[M] - mu); 0 is mean replacement
    n_fisher: Count = 100  # Fisher samples per data set; as tom-sensitivity, so its cache is reused
    # generic Fisher window of tom-sensitivity (cache key)
    fisher_window: Window | None = None
    batch_size: Count = 8

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """Measured windows: at most the data's window, BOS excluded; Fisher windows as tom-sensitivity's."""
        if field == "n_fisher":
            return self.fisher_window, True
        return min(self.window, data_window - 1), False

    def __post_init__(self) -> None:
        if self.n_windows + self.n_tom == 0:
            raise InputError("n_windows and n_tom are both 0; there is nothing to measure")
