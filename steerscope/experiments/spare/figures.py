"""spare's figures, drawn from the results alone (a notebook can redraw them from results.json)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerscope.experiments.spare.config import DIRECTIONS, reported_conditions
from steerscope.experiments.spare.scores import MAX_CONTROL_MOVE, control_move, gain, target_key, target_score


def em_figure(results: dict[str, Any]) -> go.Figure:
    figure, conditions = go.Figure(), reported_conditions(results)
    for key, label in (("em_c", "EM with the context answer"), ("em_m", "EM with the memory answer")):
        values = [results[n][key] for n in conditions]
        figure.add_bar(
            x=conditions,
            y=values,
            name=label,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [results[n][f"{key}_ci95"][1] - v for n, v in zip(conditions, values, strict=True)],
                "arrayminus": [
                    v - results[n][f"{key}_ci95"][0] for n, v in zip(conditions, values, strict=True)
                ],
            },
        )
    figure.update_layout(
        title="Held-out conflicts: which source the answer follows (95% CI)", barmode="group"
    )
    return figure


def transitions_figure(results: dict[str, Any]) -> go.Figure:
    edited = [n for n in reported_conditions(results) if n != "no_edit"]
    figure = go.Figure()
    for key in ("C_to_M", "M_to_C"):
        figure.add_bar(
            x=edited, y=[results[n]["transitions"][key] for n in edited], name=key.replace("_", " ")
        )
    figure.update_layout(
        title="Behaviour changes against no edit on held-out facts (counts)", barmode="group"
    )
    return figure


def dev_grid_figures(results: dict[str, Any]) -> list[go.Figure]:
    """One heatmap per direction: dev EM toward that source over (layers, p) x alpha."""
    figures = []
    spare_rows = [r for r in results["dev_grid"] if r["method"] == "spare"]
    for direction in DIRECTIONS:
        rows = [r for r in spare_rows if r["direction"] == direction]
        alphas = sorted({r["alpha"] for r in rows})
        keys = list(dict.fromkeys((tuple(r["layers"]), r["p"]) for r in rows))
        score = {(tuple(r["layers"]), r["p"], r["alpha"]): target_score(r) for r in rows}
        z = [[score[(layers, p, a)] for a in alphas] for layers, p in keys]
        figure = go.Figure(
            go.Heatmap(
                z=z,
                x=[f"alpha {a:g}" for a in alphas],
                y=[f"L{','.join(map(str, layers))} p={p:g}" for layers, p in keys],
                colorscale="Viridis",
            )
        )
        metric = target_key(direction).upper()
        no_edit = results["dev_no_edit"][target_key(direction)]
        figure.update_layout(title=f"Dev grid, SpARE to {direction}: {metric} (no edit {no_edit:.3f})")
        figures.append(figure)
    return figures


def dev_control_figure(results: dict[str, Any]) -> go.Figure:
    """Every SpARE dev setting: its gain toward the source it steers to against the largest move of
    its random-feature control; settings in the shaded band meet the issue's bars."""
    no_edit = results["dev_no_edit"]
    figure = go.Figure()
    for direction in DIRECTIONS:
        rows = [r for r in results["dev_grid"] if r["method"] == "spare" and r["direction"] == direction]
        figure.add_scatter(
            x=[control_move(r, no_edit) for r in rows],
            y=[gain(r, no_edit) for r in rows],
            mode="markers",
            name=f"to {direction}",
            text=[f"L{','.join(map(str, r['layers']))} p={r['p']:g} alpha={r['alpha']:g}" for r in rows],
        )
    figure.add_vrect(x0=0, x1=MAX_CONTROL_MOVE, fillcolor="green", opacity=0.1, line_width=0)
    figure.update_layout(
        title="Dev grid: SpARE's gain toward its source against its random control's largest EM move",
        xaxis_title="random control: largest |change| of EM_C or EM_M",
        yaxis_title="SpARE: change of EM toward the source",
    )
    return figure
