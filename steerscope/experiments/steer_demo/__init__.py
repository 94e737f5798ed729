"""`steer-demo`: build a steering vector from contrast pairs (by default the project's sentiment
set; `--data pairs=FILE` for a user's), pick the layer on held-out pairs, show generations at
several strengths and the projection per layer. Pairs with a completion are read over the
completion's tokens after each prompt, pairs without at the last prompt token."""

from __future__ import annotations

from steerscope.context import ExperimentContext
from steerscope.experiments.steer_demo import phases, report
from steerscope.experiments.steer_demo.config import SteerDemoConfig
from steerscope.registry import Outcome, register


@register(
    "steer-demo",
    SteerDemoConfig,
    "steering vector from contrast pairs (default: sentiment): layer sweep, generations, projections",
    data=("pairs",),
)
def run(config: SteerDemoConfig, context: ExperimentContext) -> Outcome:
    """Split the pairs, sweep the layers and fit the vector, generate at each strength, project
    every layer on the direction, report."""
    pairs = phases.select_pairs(config, context)
    sweep, layer, vector = phases.fit_vector(config, context, pairs)
    generations = phases.generate_at_strengths(config, context.model, vector, pairs.neutral)
    projection = phases.project_per_layer(context.model, vector, layer, pairs)
    return report.outcome(context.model, pairs, sweep, layer, vector, generations, projection)
