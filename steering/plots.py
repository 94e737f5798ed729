"""Figures for steering-vector construction, separate from the computing code."""

from __future__ import annotations

import plotly.graph_objects as go


def layer_sweep_figure(
    sweep: list[dict[str, float]], layer: int, what: str = "positive vs negative"
) -> go.Figure:
    """`sweep_layers` output: held-out separation (bars) and sign accuracy (line) per layer,
    with the chosen layer marked."""
    layers = [s["layer"] for s in sweep]
    figure = go.Figure(go.Bar(x=layers, y=[s["separation"] for s in sweep], name="separation"))
    figure.add_scatter(
        x=layers, y=[s["accuracy"] for s in sweep], name="accuracy", yaxis="y2", mode="lines+markers"
    )
    figure.add_vline(x=layer, line_dash="dot", annotation_text="chosen")
    figure.update_layout(
        title=f"Held-out {what} along each layer's direction",
        xaxis_title="layer (resid_post)",
        yaxis=dict(title="separation (pooled sd)"),
        yaxis2=dict(title="accuracy", overlaying="y", side="right", range=[0, 1.05]),
    )
    return figure
