"""What efficiency writes on a reasoning model: the results with each method's verdict against the
target, the summary, the held-out frontier figure and the dev-grid tables."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerscope.experiments.efficiency.config import EfficiencyConfig
from steerscope.experiments.efficiency.thinking_phases import DevChoice, ThinkingPlan
from steerscope.model import ModelLike
from steerscope.registry import Outcome
from steerscope.steering.efficiency import Harvest
from steerscope.steering.frontier import Setting

#: The issue's target: thinking tokens cut by at least 20% at accuracy within 2 points.
TARGET_CUT, TARGET_ACCURACY = -0.20, -0.02


def verdict(row: dict[str, Any] | None) -> dict[str, Any]:
    """Whether a chosen held-out row meets the target (None: nothing chosen on dev)."""
    if row is None:
        return {"chosen": None, "meets_target": False}
    return {
        "chosen": {k: row[k] for k in ("layer", "strength", "budget")},
        "thinking_change": row["thinking_change"],
        "accuracy_change": row["accuracy_change"],
        "meets_target": row["thinking_change"] <= TARGET_CUT and row["accuracy_change"] >= TARGET_ACCURACY,
    }


def thinking_summary(results: dict[str, Any], config: EfficiencyConfig) -> str:
    """Unsteered held-out accuracy and thinking length, then per method the setting chosen on dev:
    its change of thinking tokens at its change of accuracy (95% intervals) and the target's verdict."""
    splits, frontier = results["splits"], results["frontier"]
    [unsteered] = frontier["unsteered"]
    lines = [
        f"{results['model']}: {splits['harvest']} harvest, {splits['dev']} dev, {splits['heldout']} held-out "
        f"problems, {config.n_eval_samples} traces each at temperature {config.temperature}",
        f"unsteered: accuracy {_ci(unsteered['accuracy'], unsteered['accuracy_ci'], '.3f')}, thinking "
        f"tokens {_ci(unsteered['mean_thinking_tokens'], unsteered['mean_thinking_ci'], '.1f')}",
        *(f"{method} skipped: {reason}" for method, reason in results["skipped"].items()),
    ]
    for method, result in results["target"].items():
        row = next((r for r in frontier[method] if r["chosen"]), None)
        if row is None:
            lines.append(f"{method}: nothing chosen on dev (no setting thinks less within the tolerance)")
            continue
        lines.append(
            f"{Setting(row['method'], row['layer'], row['strength'], row['budget']).label} (chosen on dev): "
            f"thinking {_ci(row['thinking_change'], row['thinking_change_ci'], '+.1%')} at accuracy "
            f"{_ci(row['accuracy_change'], row['accuracy_change_ci'], '+.3f')}; "
            f"{'meets' if result['meets_target'] else 'misses'} the target (>= 20% fewer thinking tokens, "
            "accuracy within 2 points)"
        )
    return "\n".join(lines)


def _ci(value: float, interval: list[float], spec: str) -> str:
    """`value [low, high]`, each formatted with `spec`."""
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def thinking_frontier_figure(frontier: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Held-out accuracy against mean thinking tokens with 95% intervals, one trace per method;
    the setting chosen on dev is drawn larger."""
    figure = go.Figure()
    for method, rows in frontier.items():
        figure.add_scatter(
            x=[r["mean_thinking_tokens"] for r in rows],
            y=[r["accuracy"] for r in rows],
            error_x=dict(
                type="data",
                symmetric=False,
                array=[r["mean_thinking_ci"][1] - r["mean_thinking_tokens"] for r in rows],
                arrayminus=[r["mean_thinking_tokens"] - r["mean_thinking_ci"][0] for r in rows],
            ),
            error_y=dict(
                type="data",
                symmetric=False,
                array=[r["accuracy_ci"][1] - r["accuracy"] for r in rows],
                arrayminus=[r["accuracy"] - r["accuracy_ci"][0] for r in rows],
            ),
            text=[Setting(r["method"], r["layer"], r["strength"], r["budget"]).label for r in rows],
            marker=dict(size=[14 if r["chosen"] else 8 for r in rows]),
            mode="markers" if method == "unsteered" else "lines+markers",
            name=method,
        )
    figure.update_layout(
        title="Held-out accuracy against thinking length (95% intervals over problems)",
        xaxis_title="mean thinking tokens",
        yaxis_title="accuracy",
        yaxis=dict(range=[-0.05, 1.05]),
    )
    return figure


def outcome(
    config: EfficiencyConfig,
    model: ModelLike,
    plan: ThinkingPlan,
    harvest: Harvest | None,
    skipped: dict[str, str],
    choice: DevChoice,
    frontier: dict[str, list[dict[str, Any]]],
) -> Outcome:
    """The results (splits, dev grids and choices, held-out frontier, each method's verdict) with
    summary, figure and tables."""
    results = {
        "model": model.source,
        "methods": plan.methods,
        "skipped": skipped,
        "thought_delimiter": plan.delimiter,
        "layers": plan.layers,
        "splits": {"harvest": len(plan.harvest_problems), "dev": len(plan.dev), "heldout": len(plan.heldout)},
        "harvest": None if harvest is None else harvest.counts,
        "dev_unsteered": choice.unsteered,
        "dev_grid": choice.rows,
        "chosen": {m: None if s is None else s.describe() for m, s in choice.chosen.items()},
        "frontier": frontier,
        "target": {
            method: verdict(next((r for r in rows if r["chosen"]), None))
            for method, rows in frontier.items()
            if method != "unsteered"
        },
    }
    return Outcome(
        results=results,
        summary=thinking_summary(results, config),
        figures=[thinking_frontier_figure(frontier)],
        tables=[
            (
                "Held-out frontier (95% intervals over problems; change against unsteered)",
                [row for rows in frontier.values() for row in rows],
            ),
            *((f"Dev grid: {method}", rows) for method, rows in choice.rows.items()),
        ],
    )
