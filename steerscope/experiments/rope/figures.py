"""rope's figures, drawn from the results alone (a notebook can redraw them from results.json)."""

from __future__ import annotations

import math
import statistics
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def shown_layers(layer_types: list[str]) -> list[int]:
    """First, middle, first global-attention and last layer, without repeats."""
    n = len(layer_types)
    chosen = [0, n // 2]
    if "full_attention" in layer_types and len(set(layer_types)) > 1:
        chosen.append(layer_types.index("full_attention"))
    chosen.append(n - 1)
    return list(dict.fromkeys(chosen))


def _head_rows(n_heads: int, n_kv_heads: int) -> list[str]:
    return [f"q h{h}" for h in range(n_heads)] + [f"k h{h}" for h in range(n_kv_heads)]


def norm_heatmaps(results: dict[str, Any]) -> list[go.Figure]:
    """Per shown layer: log10 pair norm, rows = query then key heads, columns = rotary pairs."""
    anatomy = results["anatomy"]
    rows = _head_rows(anatomy["n_heads"], anatomy["n_kv_heads"])
    figs = []
    for layer in shown_layers(anatomy["layer_types"]):
        z = results["pair_norms"]["q"][layer] + results["pair_norms"]["k"][layer]
        z = [[math.log10(max(v, 1e-12)) for v in row] for row in z]
        fig = go.Figure(go.Heatmap(z=z, y=rows, colorscale="Viridis", colorbar=dict(title="log10 norm")))
        fig.update_layout(
            title=f"L{layer} ({anatomy['layer_types'][layer]}, base {anatomy['rope_bases'][layer]:g}): "
            "pair norm over tokens (pair 0 rotates fastest)",
            xaxis_title="rotary pair i",
            yaxis_autorange="reversed",
        )
        figs.append(fig)
    return figs


def change_heatmaps(results: dict[str, Any]) -> list[go.Figure]:
    """Per shown layer: relative change of pair norms, targeted mask beside the first random mask."""
    anatomy = results["anatomy"]
    rows = _head_rows(anatomy["n_heads"], anatomy["n_kv_heads"])
    perturbation = results["perturbation"]
    targeted = perturbation["targeted"]["changes"]
    random = perturbation["random"]["changes"][0]
    figs = []
    for layer in shown_layers(anatomy["layer_types"]):
        panels = [
            c["q_pair_norm_relative"][layer] + c["k_pair_norm_relative"][layer] for c in (targeted, random)
        ]
        limit = max(abs(v) for panel in panels for row in panel for v in row) or 1.0
        fig = make_subplots(
            rows=1, cols=2, subplot_titles=("targeted (ToM) mask", "random mask, same counts")
        )
        for col, z in enumerate(panels, start=1):
            fig.add_trace(
                go.Heatmap(z=z, y=rows, colorscale="RdBu_r", zmin=-limit, zmax=limit, showscale=col == 2),
                row=1,
                col=col,
            )
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=f"L{layer}: relative change of pair norms (after - before) / before")
        figs.append(fig)
    return figs


def change_by_layer_figure(results: dict[str, Any]) -> go.Figure:
    """Mean |relative change| of massive vs other query pairs per layer, targeted vs random."""
    fig = go.Figure()
    for label in ("targeted", "random"):
        by_layer = results["perturbation"][label]["by_layer"]
        for group in ("massive", "other"):
            values = by_layer[f"q_{group}_rel_change"]
            fig.add_bar(
                x=list(range(len(values))),
                y=[None if math.isnan(v) else v for v in values],
                name=f"{label}, {group} q pairs",
            )
    fig.update_layout(
        title="Mean |relative change| of query pair norms per layer",
        xaxis_title="layer",
        yaxis_type="log",
        barmode="group",
    )
    return fig


def bos_figures(results: dict[str, Any]) -> list[go.Figure]:
    """BOS attention per layer (mean over heads) for before / targeted / random, and per head heatmaps."""
    attention = results["bos_attention"]
    layers = list(range(len(attention["before"])))
    lines = go.Figure()
    conditions = [("before", attention["before"]), ("targeted mask", attention["targeted"])]
    conditions += [(f"random mask {i}", r) for i, r in enumerate(attention["random"])]
    for name, values in conditions:
        lines.add_scatter(
            x=layers, y=[statistics.fmean(row) for row in values], mode="lines+markers", name=name
        )
    lines.update_layout(
        title="Attention on BOS per layer (mean over heads and non-BOS query tokens)",
        xaxis_title="layer",
        yaxis_title="attention probability",
    )
    heads = [f"h{h}" for h in range(len(attention["before"][0]))]
    attention_map = go.Figure(go.Heatmap(z=attention["before"], x=heads, colorscale="Viridis"))
    attention_map.update_layout(title="Attention on BOS per layer and head", yaxis_title="layer")
    cos_map = go.Figure(
        go.Heatmap(z=results["qk_angle"]["before"]["cos"], x=heads, colorscale="RdBu_r", zmin=-1, zmax=1)
    )
    cos_map.update_layout(title="Mean cos(query, BOS key) per layer and head", yaxis_title="layer")
    return [lines, attention_map, cos_map]


def figures(results: dict[str, Any]) -> list[go.Figure]:
    """Every report figure, from a results dict (as written to results.json)."""
    return [
        *norm_heatmaps(results),
        *change_heatmaps(results),
        change_by_layer_figure(results),
        *bos_figures(results),
    ]
