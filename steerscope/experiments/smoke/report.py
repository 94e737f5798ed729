"""What smoke writes: the model's size, the residual norms (a figure) and the two generations."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerscope.experiments.smoke.config import PROMPTS, SmokeConfig
from steerscope.model import ModelLike
from steerscope.registry import Outcome
from steerscope.report import quoted


def outcome(
    config: SmokeConfig, model: ModelLike, norms: list[float], layer: int, texts: dict[str, str]
) -> Outcome:
    """The results with the norm figure, the generations table and the summary."""
    anatomy = model.anatomy
    figure = go.Figure(go.Scatter(x=list(range(anatomy.n_layers)), y=norms, mode="lines+markers"))
    figure.update_layout(title="Mean residual norm after each layer", xaxis_title="layer", yaxis_title="norm")
    results = {
        "model": model.source,
        "anatomy": {
            "n_layers": anatomy.n_layers,
            "d_model": anatomy.d_model,
            "rope_bases": anatomy.rope_bases,
        },
        "resid_norm_per_layer": norms,
        "prompt": PROMPTS[0],
        "steered_at": {"layer": layer, "relative_strength": config.relative_strength},
        "generations": texts,
    }
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=[figure],
        tables=[("Generations", [{"mode": k, "text": v} for k, v in texts.items()])],
    )


def summary_text(results: dict[str, Any]) -> str:
    """The model's size, how the residual norm grows, and the plain and steered continuations."""
    anatomy, norms, steered = results["anatomy"], results["resid_norm_per_layer"], results["steered_at"]
    return "\n".join(
        [
            f"{results['model']}: {anatomy['n_layers']} layers, d_model {anatomy['d_model']}; mean residual "
            f"norm {norms[0]:.3g} after layer 0, {norms[-1]:.3g} after the last",
            f"prompt:  {quoted(results['prompt'])}",
            f"plain:   {quoted(results['generations']['plain'])}",
            f"steered: {quoted(results['generations']['steered'])} (a random direction at "
            f"L{steered['layer']}.resid_post, {steered['relative_strength']:g} x the residual norm)",
        ]
    )
