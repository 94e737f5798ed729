"""efficiency's settings: one config for both experiments behind the name (a model that thinks in
`<think>` tags and one that does not); the fields under "Reasoning models" apply to the first only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, Layer, NewTokens, NonEmpty, NonZero, Range

METHODS = ("efficiency", "seal", "budget")


@dataclass
class EfficiencyConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(
        n_train=6,
        n_heldout=6,
        n_samples=4,
        max_new_tokens=48,
        strengths=[0.0, 0.05, 0.1, 0.2],
        layer_candidates=3,
    )
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_train": (("problems", "train"),),
        "n_heldout": (("problems", "heldout"),),
    }
    n_train: Count = 32
    n_heldout: Count = 24
    n_samples: Count = 6
    temperature: Annotated[float, Range(0, low_open=True)] = 0.8
    max_new_tokens: NewTokens = 96
    strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [-0.1, 0.0, 0.05, 0.1, 0.2])
    # arithmetic steps of the generated problems (a user's problems are taken as they are)
    steps: Annotated[list[Annotated[int, Range(1, 3)]], NonEmpty()] = field(default_factory=lambda: [1, 2, 3])
    # fewer sampled pairs than this: fall back to the prompt contrast (one pair fits, one picks the layer)
    min_pairs: Annotated[int, Range(2)] = 6
    variant: Literal["auto", "sampled", "prompt_contrast"] = "auto"
    contrast_completions: Literal["model", "written"] = "model"  # the prompt contrast's completions
    # default: the candidate layer steering to the fewest tokens per correct answer
    layer: Layer | None = None
    layer_candidates: Count = 6  # layers tried, spread from the first to the last but one
    # strength of the layer-choice trial on harvested problems
    probe_strength: Annotated[float, NonZero()] = 0.2
    n_probe: Count = 16  # harvested problems solved per candidate layer
    # rows per generation call; without </think>, an evaluation's settings (unsteered, each layer or
    # strength, the brevity prompt) share a call of batch_size problems: batch_size x settings rows
    batch_size: Count = 16
    n_shown: Annotated[int, Range(0)] = 4  # held-out problems shown side by side in the report
    # Reasoning models (a single </think> token) only:
    method: Literal["efficiency", "seal", "budget", "all"] = "all"
    # dev-grid layers (default: `layer_candidates` middle layers)
    layers: Annotated[list[Layer], NonEmpty()] | None = None
    # share of the n_train problems kept for the dev choice (the rest harvest)
    dev_share: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.34
    n_eval_samples: Count = 4  # sampled traces per dev / held-out problem (at `temperature`)
    # thinking (2506.15647) | delimiters (read and added at thought delimiters)
    efficiency_at: Literal["thinking", "delimiters"] = "thinking"
    # relative to ||h||
    thinking_strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    # absolute, as SEAL
    delimiter_strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # shares of the unsteered dev thinking length
    budget_shares: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.5, 0.75, 1.0]
    )
    thought_delimiter: Annotated[str, NonEmpty()] = "auto"  # auto: "\n\n" if a token ends with it, else "\n"
    # dev choice: accuracy at most this far below unsteered
    tolerance: Annotated[float, Range(0, 1)] = 0.02
