"""The experiment registry: each experiment is a function from a typed config and a context (the
model and its data) to an `Outcome`, registered once by name with the data kinds it takes.

This module imports nothing of steerscope, so an experiment module can register itself without
pulling in the runner, and the runner can discover experiment modules without a hand-kept list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go


@dataclass
class ExperimentConfig:
    """Settings every experiment has; experiments subclass this with their own fields.

    `QUICK` holds the short setting `--quick` applies to fields the caller did not set.
    `RECORD_COUNTS` maps count fields to the (data kind, split)s they draw from ("" for the whole
    source): a count the caller did not set is lowered to what the data holds, and one the
    caller set that the data cannot meet is an error before any forward pass (`steerscope.limits`).
    """

    QUICK: ClassVar[dict[str, Any]] = {}
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    quick: bool = False
    # every random generator steerscope feeds takes it: numpy's RandomState and scikit-learn stop at 2**32 - 1
    seed: Annotated[int, range(2**32)] = 0

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """(window, bos) the text windows counted by `field` are cut with, as `TextData.windows`
        takes them (None: the data's own `data_window`): how many a text holds depends on them."""
        return None, False


@dataclass
class Outcome:
    """What an experiment returns: results for JSON, and what the report shows."""

    results: dict[str, Any]
    summary: str
    figures: list[go.Figure] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: `run(config, context) -> Outcome` and the data kinds it takes."""

    name: str
    description: str
    config: type[ExperimentConfig]
    run: Callable[[Any, Any], Outcome]
    data_kinds: tuple[str, ...] = ()


class Registry:
    """Experiments by name; registering a name twice is an error (two modules claiming one name)."""

    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}

    def add(self, experiment: Experiment) -> None:
        if experiment.name in self._experiments:
            raise ValueError(f"experiment {experiment.name!r} is registered twice")
        self._experiments[experiment.name] = experiment

    def get(self, name: str) -> Experiment | None:
        return self._experiments.get(name)

    def names(self) -> list[str]:
        return sorted(self._experiments)


#: The registry `steerscope run` and `run_experiment` read.
EXPERIMENTS = Registry()


def register(
    name: str, config: type[ExperimentConfig], description: str, data: tuple[str, ...] = ()
) -> Callable[[Callable[[Any, Any], Outcome]], Callable[[Any, Any], Outcome]]:
    """Decorator adding `run(config, context) -> Outcome` to `EXPERIMENTS` under `name`, taking
    the data kinds `data` (e.g. ("tom", "text"))."""

    def add(run: Callable[[Any, Any], Outcome]) -> Callable[[Any, Any], Outcome]:
        EXPERIMENTS.add(Experiment(name, description, config, run, tuple(data)))
        return run

    return add
