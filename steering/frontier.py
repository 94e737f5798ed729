"""The accuracy vs thinking-length frontier of the methods that shorten a reasoning model's
thinking, each tuned on dev problems and then traced on held-out ones.

A `Setting` is one way of generating: unsteered, steered while thinking (efficiency steering,
2506.15647, or SEAL, 2504.07986) at one layer and strength, held to a hard thinking budget, or
asked for brevity in the prompt (the budget-style baselines of 2506.13752). `evaluate_settings`
solves problems under each setting (the same sampling seed for all, so settings are compared on
the same draws); `choose_setting` takes on dev the setting with the fewest thinking tokens within
an accuracy tolerance of unsteered (`efficiency.pick_steering`); `heldout_frontier` solves the
held-out problems under a method's settings with 95% intervals over problems and the paired
change against unsteered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from steerscope.data.arithmetic import Problem, Style
from steerscope.model import ModelLike
from steerscope.steering.efficiency import Generation, evaluate_thinking, paired_change, pick_steering
from steerscope.steering.thinking import ThinkingPositions, ThinkingSteer
from steerscope.steering.vector import SteeringVector

Samples = list[list[Generation]]


@dataclass(frozen=True)
class Setting:
    """One way of generating: `steer` while thinking, a thinking `budget`, or a prompt `style`."""

    method: str
    layer: int | None = None
    strength: float | None = None
    budget: int | None = None
    style: Style = "standard"
    steer: ThinkingSteer | None = None

    def describe(self) -> dict[str, Any]:
        """The setting as JSON-ready fields of a results row."""
        return {
            "method": self.method,
            "layer": self.layer,
            "strength": self.strength,
            "budget": self.budget,
            "style": self.style,
        }

    @property
    def label(self) -> str:
        if self.layer is not None:
            return f"{self.method} L{self.layer} {self.strength:+g}"
        if self.budget is not None:
            return f"{self.method} {self.budget}"
        return self.method


UNSTEERED = Setting("unsteered")
BREVITY_CUE = Setting("brevity cue", style="brief")


def middle_layers(n_layers: int, k: int) -> list[int]:
    """At most `k` layers spread evenly over the middle of the network (neither the first nor the
    last layer; all layers of a network of one or two)."""
    if n_layers <= 2:
        return list(range(n_layers))
    inner = list(range(1, n_layers - 1))
    if k >= len(inner):
        return inner
    if k <= 1:
        return [inner[len(inner) // 2]]
    return sorted({inner[round(i * (len(inner) - 1) / (k - 1))] for i in range(k)})


def steering_settings(
    method: str,
    vectors: Mapping[int, SteeringVector],
    strengths: Sequence[float],
    at: ThinkingPositions = "thinking",
    delimiter: str = "\n\n",
    scale: str = "relative",
) -> list[Setting]:
    """Every layer of `vectors` at every strength, steering while thinking at `at`."""
    return [
        Setting(method, layer, strength, steer=ThinkingSteer(vector, strength, at, delimiter, scale))
        for layer, vector in vectors.items()
        for strength in strengths
    ]


def budget_settings(budgets: Sequence[int]) -> list[Setting]:
    return [Setting("budget", budget=budget) for budget in budgets]


def evaluate_settings(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    progress: bool = False,
    **generation: Any,
) -> list[tuple[dict[str, Any], Samples]]:
    """Each setting's row (its fields and `evaluate_thinking` summary with intervals) and samples;
    `generation` goes to `evaluate_thinking` (prompt, n_samples, temperature, seed, ...).
    `progress`: a bar over the settings."""
    out = []
    for setting in tqdm(settings, desc="settings", disable=not progress, leave=False):
        summary, samples = evaluate_thinking(
            model,
            problems,
            style=setting.style,
            thinking_steer=setting.steer,
            budget=setting.budget,
            **generation,
        )
        out.append(({**setting.describe(), **summary}, samples))
    return out


def choose_setting(
    unsteered: dict[str, Any], rows: Sequence[dict[str, Any]], tolerance: float = 0.02
) -> int | None:
    """Index into `rows` (dev rows of one method) of the fewest mean thinking tokens among those
    that think less than `unsteered` at an accuracy at most `tolerance` below it; None if none does."""
    return pick_steering([unsteered, *rows], tolerance)


def heldout_frontier(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    unsteered: Samples,
    **generation: Any,
) -> list[dict[str, Any]]:
    """Rows of `evaluate_settings` on held-out problems, each with its paired change against the
    `unsteered` samples of the same problems (accuracy difference, relative thinking change)."""
    return [
        {**row, **paired_change(unsteered, samples, seed=generation.get("seed", 0))}
        for row, samples in evaluate_settings(model, problems, settings, **generation)
    ]
