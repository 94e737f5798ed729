"""The experiment registry: each experiment is a function from a typed config to a result dict.

The CLI (`steerscope run NAME`) and notebooks call the same `run_experiment`, which writes
`results.json` and `report.html` into the output folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import plotly.graph_objects as go

from steerscope.report import write_report, write_results


@dataclass
class ExperimentConfig:
    """Settings every experiment has; experiments subclass this with their own fields.

    `QUICK` holds the short setting `--quick` applies to fields the caller did not set.
    """

    QUICK: ClassVar[dict[str, Any]] = {}
    model: str | None = None
    quick: bool = False
    seed: int = 0


@dataclass
class Outcome:
    """What an experiment returns: results for JSON, and what the report shows."""

    results: dict[str, Any]
    summary: str
    figures: list[go.Figure] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    config: type[ExperimentConfig]
    run: Callable[[Any], Outcome]


REGISTRY: dict[str, Experiment] = {}


def register(name: str, config: type[ExperimentConfig], description: str):
    """Decorator adding `run(config) -> Outcome` to the registry under `name`."""

    def add(run: Callable[[Any], Outcome]) -> Callable[[Any], Outcome]:
        REGISTRY[name] = Experiment(name, description, config, run)
        return run

    return add


def get_experiment(name: str) -> Experiment:
    _import_all()
    if name not in REGISTRY:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _import_all() -> None:
    from steerscope.experiments import (  # noqa: F401
        conflict_probe,
        efficiency,
        position_logits,
        rope,
        smoke,
        spare,
        steer_demo,
        tom_sensitivity,
    )


def run_experiment(name: str, out: str | Path, **settings: Any) -> Outcome:
    """Run experiment `name` with `settings` (config fields) and write its results and report."""
    experiment = get_experiment(name)
    fields = {f.name for f in dataclasses.fields(experiment.config)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise ValueError(
            f"{name}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    if settings.get("quick"):
        settings = {**experiment.config.QUICK, **settings}
    config = experiment.config(**settings)
    started = time.time()
    outcome = experiment.run(config)
    outcome.results = {
        "experiment": name,
        "config": dataclasses.asdict(config),
        "seconds": round(time.time() - started, 1),
        **outcome.results,
    }
    folder = Path(out)
    write_results(folder, outcome.results)
    write_report(folder, f"steerscope: {name}", outcome.summary, outcome.figures, outcome.tables)
    return outcome
