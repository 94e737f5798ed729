"""Figures for steering: construction, projections and the efficiency frontier, separate from the
computing code so a notebook re-plots without recomputing."""

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


def projection_figure(projection: dict[str, list[float]], layer: int) -> go.Figure:
    """Cosine of the residual with the steering direction per layer, by prompt set; the steered
    layer marked."""
    figure = go.Figure()
    for name, values in projection.items():
        figure.add_scatter(x=list(range(len(values))), y=values, mode="lines+markers", name=name)
    figure.add_vline(x=layer, line_dash="dot", annotation_text="steered layer")
    figure.update_layout(
        title="Cosine of the residual (last token, or completion mean) with the steering direction, per layer",
        xaxis_title="layer (resid_post)",
        yaxis_title="cosine",
    )
    return figure


def frontier_figure(baseline: dict, brevity: dict, sweep: list[dict]) -> go.Figure:
    """Accuracy against mean generated tokens, one point per steering strength."""
    figure = go.Figure()
    figure.add_scatter(
        x=[s["mean_tokens"] for s in sweep],
        y=[s["accuracy"] for s in sweep],
        text=[f"{s['strength']:+g}" for s in sweep],
        mode="lines+markers+text",
        textposition="top center",
        name="efficiency steering (strength)",
    )
    for name, point, symbol in (
        ("no steering", baseline, "circle-open"),
        ("brevity prompt", brevity, "star"),
    ):
        figure.add_scatter(
            x=[point["mean_tokens"]],
            y=[point["accuracy"]],
            mode="markers",
            marker=dict(size=14, symbol=symbol),
            name=name,
        )
    figure.update_layout(
        title="Held-out accuracy against solution length",
        xaxis_title="mean generated tokens",
        yaxis_title="accuracy",
        yaxis=dict(range=[-0.05, 1.05]),
    )
    return figure
