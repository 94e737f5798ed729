"""What position-logits writes: the results (medians, the fit's description, the data), the summary,
the medians table and the figures."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import torch

from steerscope.context import ExperimentContext
from steerscope.experiments.position_logits.config import PositionLogitsConfig
from steerscope.experiments.position_logits.phases import summarise
from steerscope.probes.position_logits import PAPER_R, PositionLogits
from steerscope.registry import Outcome


def subsample(real: torch.Tensor, fitted: torch.Tensor, n: int, seed: int) -> dict[str, list[float]]:
    """At most `n` random (real, fitted) pairs, for a scatter plot."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(real.numel(), generator=generator)[:n]
    return {"real": real[keep].tolist(), "fitted": fitted[keep].tolist()}


def outcome(
    config: PositionLogitsConfig,
    context: ExperimentContext,
    prompts: list[str],
    trained: PositionLogits,
    random: dict[str, Any] | None,
) -> Outcome:
    """The results (medians, the best and worst head's points, random init, the fit, the data)
    with the summary, the figures and the medians table."""
    model, text = context.model, context.data.need("text")
    results: dict[str, Any] = {"model": model.source, "paper_r": PAPER_R, **summarise(trained)}
    rows = results["per_head"]
    best = max(rows, key=lambda row: row["r"])
    worst = min(rows, key=lambda row: row["r"])
    scatters = {
        name: {
            "layer": row["layer"],
            "head": row["head"],
            "r": row["r"],
            **subsample(*trained.points(row["layer"], row["head"]), config.scatter_points, config.seed),
        }
        for name, row in (("best", best), ("worst", worst))
    }
    if random is not None:
        results["random_init"] = random
        results["random_init_median_r"] = random["median_r"]
        results["random_init_median_r_within_query"] = random["median_r_within_query"]
        results["random_init_virtual_median_r"] = random["virtual"]["median_r"]
    results["fit"] = {
        "model": "w(i, j) ~ a(i - j) + b(i) + c(j), least squares over j <= i (inside any sliding window)",
        "distance_term": "shared by all prompts of a head" if config.share_distance else "per prompt",
        "query_and_key_terms": "per (prompt, position)",
        "dof_by_layer": {str(layer): trained.dof[layer] for layer in trained.layers},
        "n_cells_per_head": sum(int(mask.sum()) for mask in trained.allowed[trained.layers[0]]),
        "virtual": "per query i: q_i . R_d k_j ~ f(d) + g(j) over all real keys j and the distance grid",
    }
    results["data"] = {"n_prompts": len(prompts), "lengths": trained.lengths, "source": text.source}
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=[
            head_heatmap(results["per_head"], "r", "r of the additive fit a(i-j) + b(i) + c(j), trained"),
            head_heatmap(
                results["per_head"], "virtual_r", "r of the virtual-distance fit f(d) + g(j), trained"
            ),
            layer_medians_figure(results),
            *(scatter_figure(scatters[name], name) for name in ("best", "worst")),
        ],
        tables=[("Medians over heads", medians_table(results))],
    )


def summary_text(results: dict[str, Any]) -> str:
    lines = [
        results["model"],
        f"median r over heads (additive fit of real logits): {results['median_r']:.3f} "
        f"(paper: {results['paper_r']}); within-query r {results['median_r_within_query']:.3f}",
        f"virtual-distance fit f(d) + g(j): median r {results['virtual']['median_r']:.3f}",
    ]
    if "random_init" in results:
        lines.append(
            f"random init, same config: median r {results['random_init_median_r']:.3f}, "
            f"within-query {results['random_init_median_r_within_query']:.3f}, "
            f"virtual {results['random_init_virtual_median_r']:.3f}"
        )
    return "\n".join(lines)


def medians_table(results: dict[str, Any]) -> list[dict[str, Any]]:
    row = {
        "model": "trained",
        "median r": results["median_r"],
        "within-query r": results["median_r_within_query"],
        "virtual r": results["virtual"]["median_r"],
        "paper r": results["paper_r"],
    }
    rows = [row]
    if "random_init" in results:
        random = results["random_init"]
        rows.append(
            {
                "model": "random init",
                "median r": random["median_r"],
                "within-query r": random["median_r_within_query"],
                "virtual r": random["virtual"]["median_r"],
                "paper r": results["paper_r"],
            }
        )
    return rows


def head_heatmap(rows: list[dict[str, Any]], key: str, title: str) -> go.Figure:
    layers = sorted({row["layer"] for row in rows})
    heads = sorted({row["head"] for row in rows})
    z = [
        [next(r[key] for r in rows if r["layer"] == layer and r["head"] == head) for head in heads]
        for layer in layers
    ]
    figure = go.Figure(
        go.Heatmap(z=z, x=[f"h{h}" for h in heads], y=layers, colorscale="Viridis", zmin=0, zmax=1)
    )
    figure.update_layout(title=title, xaxis_title="query head", yaxis_title="layer")
    return figure


def layer_medians_figure(results: dict[str, Any]) -> go.Figure:
    layers = sorted({row["layer"] for row in results["per_head"]})
    figure = go.Figure()
    figure.add_scatter(x=layers, y=results["median_r_by_layer"], mode="lines+markers", name="trained: r")
    figure.add_scatter(
        x=layers,
        y=results["median_r_within_query_by_layer"],
        mode="lines+markers",
        name="trained: within-query r",
    )
    figure.add_scatter(
        x=layers, y=results["virtual"]["median_r_by_layer"], mode="lines+markers", name="trained: virtual r"
    )
    if "random_init" in results:
        random = results["random_init"]
        figure.add_scatter(
            x=layers,
            y=random["median_r_by_layer"],
            mode="lines+markers",
            name="random init: r",
            line_dash="dash",
        )
        figure.add_scatter(
            x=layers,
            y=random["virtual"]["median_r_by_layer"],
            mode="lines+markers",
            name="random init: virtual r",
            line_dash="dash",
        )
    figure.add_hline(
        y=results["paper_r"], line_dash="dot", annotation_text=f"Han & Ji 2025: {results['paper_r']}"
    )
    figure.update_layout(title="Median r over heads per layer", xaxis_title="layer", yaxis_title="Pearson r")
    return figure


def scatter_figure(scatter: dict[str, Any], which: str) -> go.Figure:
    real, fitted = scatter["real"], scatter["fitted"]
    low, high = min(real + fitted), max(real + fitted)
    figure = go.Figure()
    figure.add_scatter(x=fitted, y=real, mode="markers", marker=dict(size=3, opacity=0.4), name="cells")
    figure.add_scatter(x=[low, high], y=[low, high], mode="lines", line_dash="dot", name="y = x")
    figure.update_layout(
        title=f"{which} head L{scatter['layer']}.h{scatter['head']}: r = {scatter['r']:.3f} "
        f"({len(real)} sampled cells)",
        xaxis_title="fitted a(i-j) + b(i) + c(j)",
        yaxis_title="real pre-softmax logit",
    )
    return figure
