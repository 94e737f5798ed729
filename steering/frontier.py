"""The accuracy vs thinking-length frontier of the methods that shorten a reasoning model's
thinking, each tuned on dev problems and then traced on held-out ones.

A `Setting` is one way of generating: unsteered, steered while thinking (efficiency steering,
2506.15647, or SEAL, 2504.07986) at one layer and strength, held to a hard thinking budget, or
asked for brevity in the prompt (the budget-style baselines of 2506.13752). `solve` solves
problems under a setting (the same sampling seed for all, so settings are compared on the same
draws); `dev_rows` measures a grid on dev problems, where `steering.choice.fewest_within_tolerance`
takes the setting with the fewest thinking tokens within an accuracy tolerance of unsteered;
`heldout_frontier` solves the held-out problems under a method's settings with 95% intervals
over problems and the paired change against unsteered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from steerscope.data.arithmetic import Problem, Style
from steerscope.model import ModelLike
from steerscope.steering.choice import grid_rows, held_out_rows
from steerscope.steering.generation import Generation
from steerscope.steering.reasoning import evaluate_thinking, paired_change
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


def solve(
    model: ModelLike, problems: Sequence[Problem], setting: Setting, **generation: Any
) -> tuple[dict[str, Any], Samples]:
    """`problems` solved under `setting`: the `evaluate_thinking` summary with intervals, and the
    samples; `generation` goes to `evaluate_thinking` (prompt, n_samples, temperature, seed, ...)."""
    return evaluate_thinking(
        model,
        problems,
        style=setting.style,
        thinking_steer=setting.steer,
        budget=setting.budget,
        **generation,
    )


def dev_rows(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    progress: bool = False,
    **generation: Any,
) -> list[dict[str, Any]]:
    """Each setting's row on the dev `problems`: its fields and `solve` summary (`progress`: a bar)."""
    return grid_rows(
        settings,
        Setting.describe,
        lambda setting: solve(model, problems, setting, **generation)[0],
        progress="settings" if progress else None,
    )


def heldout_frontier(
    model: ModelLike,
    problems: Sequence[Problem],
    settings: Sequence[Setting],
    unsteered: Samples,
    progress: bool = False,
    **generation: Any,
) -> list[dict[str, Any]]:
    """Each setting's row on the held-out `problems`, with its paired change against the
    `unsteered` samples of the same problems (accuracy difference, relative thinking change);
    `progress`: a bar."""
    seed = generation.get("seed", 0)
    return held_out_rows(
        settings,
        Setting.describe,
        lambda setting: solve(model, problems, setting, **generation),
        unsteered,
        lambda base, samples: paired_change(base, samples, seed=seed),
        progress="settings" if progress else None,
    )
