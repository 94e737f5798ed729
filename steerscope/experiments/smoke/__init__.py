"""`smoke`: load a model, capture residual norms per layer, and steer one generation."""

from __future__ import annotations

from steerscope.context import ExperimentContext
from steerscope.experiments.smoke import phases, report
from steerscope.experiments.smoke.config import SmokeConfig
from steerscope.registry import Outcome, register


@register("smoke", SmokeConfig, "load, capture residual norms per layer, steer one generation")
def run(config: SmokeConfig, context: ExperimentContext) -> Outcome:
    """Residual norms per layer, then one generation plain and steered, then the report."""
    norms = phases.residual_norms(context.model)
    layer, texts = phases.steered_generation(config, context.model)
    return report.outcome(config, context.model, norms, layer, texts)
