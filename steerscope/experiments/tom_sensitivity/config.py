"""tom-sensitivity's settings and the paper's sweep of mask fractions, scaled to the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from steerscope.model import Model
from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, NonEmpty, Range, Window

HEADLINE_SPARSITY = 1e-5  # the paper's 0.001% (scaled with the sweep on small models)
PAPER_SWEEP = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4)
MIN_HEADLINE_WEIGHTS = 5  # per median matrix: below this, the paper's fractions select ~nothing


@dataclass
class TomSensitivityConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_fisher=24, n_eval_tom=48, n_eval_windows=8, random_seeds=2)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_fisher": (("tom", "fisher"), ("text", "fisher")),
        "n_eval_tom": (("tom", "eval"),),
        "n_eval_windows": (("text", "eval"),),
    }
    # fractions of each matrix's weights; default: `default_sweep(model, quick)`
    sparsities: Annotated[list[Annotated[float, Range(0, 1, low_open=True)]], NonEmpty()] | None = None
    n_fisher: Count = 100  # samples per data set for the Fisher scores
    n_eval_tom: Count = 200
    n_eval_windows: Count = 40
    window: Window | None = None  # tokens per generic window; default: the text data's
    random_seeds: Count = 3
    scale: float = 0.0  # W[M] <- mu + scale * (W[M] - mu); 0 is mean replacement

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """Fisher and evaluation windows alike: `window` tokens (or the data's), BOS included."""
        return self.window, True


def default_sweep(model: Model, quick: bool = False) -> list[float]:
    """The paper's fractions 1e-6..1e-4, scaled up by powers of ten for small models until the
    headline fraction keeps at least `MIN_HEADLINE_WEIGHTS` entries of the median linear matrix
    (Gemma 3 270M: unscaled; a 1M-parameter organism: x100). `quick`: the headline and the top."""
    params = dict(model.hf.named_parameters())
    sizes = sorted(params[name].numel() for name in model.anatomy.linear_weights().values())
    median = sizes[len(sizes) // 2]
    scale = 1.0
    while median * HEADLINE_SPARSITY * scale < MIN_HEADLINE_WEIGHTS and scale < 1e4:
        scale *= 10
    sweep = [fraction * scale for fraction in PAPER_SWEEP]
    headline = PAPER_SWEEP.index(HEADLINE_SPARSITY)
    return sweep[headline::2] if quick else sweep
