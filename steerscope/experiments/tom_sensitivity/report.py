"""What tom-sensitivity writes: the results, the sweep table, the summary and the figures."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerscope.context import ExperimentContext
from steerscope.experiments.tom_sensitivity.config import (
    HEADLINE_SPARSITY,
    PAPER_SWEEP,
    TomSensitivityConfig,
    default_sweep,
)
from steerscope.experiments.tom_sensitivity.phases import Evaluation, Sweep
from steerscope.registry import Outcome


def outcome(
    config: TomSensitivityConfig, context: ExperimentContext, evaluation: Evaluation, sweep: Sweep
) -> Outcome:
    """The results with the sweep table, the summary and the sweep and mask-layout figures."""
    model, eval_windows = context.model, evaluation.windows
    results = {
        "model": model.source,
        "baseline": sweep.baseline,
        "sweep": sweep.rows,
        "mask_distribution": sweep.distribution,
        "data": {
            "n_fisher_tom": config.n_fisher,
            "n_fisher_generic": config.n_fisher,
            "n_eval_tom": len(evaluation.items),
            "n_eval_windows": len(eval_windows),
            "window": len(eval_windows[0]) if eval_windows else None,
            "suite": context.data.name,
        },
    }
    return Outcome(
        results=results,
        summary=_summary(results),
        figures=[
            *_sweep_figures(sweep.baseline, sweep.rows),
            *_distribution_figures(
                sweep.distribution, sweep.rows, default_sweep(model)[PAPER_SWEEP.index(HEADLINE_SPARSITY)]
            ),
        ],
        tables=[
            (
                "Sweep (targeted; random = mean over seeds; generic mask = the mirror)",
                [_row(s) for s in sweep.rows],
            )
        ],
    )


def _row(step: dict[str, Any]) -> dict[str, Any]:
    r, g = step["random"], step["generic_mask"]
    return {
        "sparsity": step["sparsity"],
        "n_perturbed": step["n_perturbed"],
        "tom_acc": step["tom_acc"],
        "random tom_acc": f"{r['tom_acc']:.3f} ± {r['tom_acc_sd']:.3f}",
        "tom_margin": step["tom_margin"],
        "random tom_margin": f"{r['tom_margin']:.3f} ± {r['tom_margin_sd']:.3f}",
        "ppl": step["ppl"],
        "random ppl": f"{r['ppl']:.2f} ± {r['ppl_sd']:.2f}",
        "generic mask: tom_acc, margin, ppl": (
            f"{g['tom_acc']:.3f}, {g['tom_margin']:.3f}, {g['ppl']:.2f} ({g['n_perturbed']} weights)"
        ),
    }


def _summary(results: dict[str, Any]) -> str:
    """Per mask fraction: ToM accuracy and perplexity with the ToM-sensitive mask, random masks of
    the same counts and the generic-text mask, beside the unperturbed model."""
    b, data = results["baseline"], results["data"]
    lines = [
        f"{results['model']}: {data['n_eval_tom']} held-out ToM stories, {data['n_eval_windows']} text windows",
        f"unperturbed: ToM accuracy {b['tom_acc']:.3f} (false belief {b['tom_fb_acc']:.3f}, true belief "
        f"{b['tom_tb_acc']:.3f}), perplexity {b['ppl']:.2f}",
        "mean-replaced weights per fraction m: ToM mask vs random masks (mean±sd) vs generic-text mask",
    ]
    for s in results["sweep"]:
        r, g = s["random"], s["generic_mask"]
        lines.append(
            f"  m={s['sparsity']:g} ({s['n_perturbed']} weights): ToM accuracy {s['tom_acc']:.3f} vs "
            f"{r['tom_acc']:.3f}±{r['tom_acc_sd']:.3f} vs {g['tom_acc']:.3f}; perplexity {s['ppl']:.2f} vs "
            f"{r['ppl']:.2f}±{r['ppl_sd']:.2f} vs {g['ppl']:.2f}"
        )
    return "\n".join(lines)


def _sweep_figures(baseline: dict[str, float], sweep: list[dict[str, Any]]) -> list[go.Figure]:
    x = [s["sparsity"] for s in sweep]
    figures = []
    for key, title in (
        ("tom_acc", "ToM accuracy"),
        ("tom_margin", "ToM margin (log p correct - log p foil)"),
        ("ppl", "Generic perplexity"),
    ):
        figure = go.Figure()
        figure.add_scatter(x=x, y=[s[key] for s in sweep], mode="lines+markers", name="targeted mask")
        figure.add_scatter(
            x=x,
            y=[s["random"][key] for s in sweep],
            error_y=dict(type="data", array=[s["random"][f"{key}_sd"] for s in sweep]),
            mode="lines+markers",
            name="random mask (same counts)",
        )
        figure.add_scatter(
            x=x,
            y=[s["generic_mask"][key] for s in sweep],
            mode="lines+markers",
            line_dash="dash",
            name="generic-specific mask (mirror)",
        )
        figure.add_hline(y=baseline[key], line_dash="dot", annotation_text="unperturbed")
        figure.update_layout(
            title=f"{title} vs mask fraction", xaxis_title="fraction m per matrix", xaxis_type="log"
        )
        figures.append(figure)
    return figures


def _distribution_figures(
    distribution: dict[str, Any], sweep: list[dict[str, Any]], headline: float
) -> list[go.Figure]:
    key = str(headline) if str(headline) in distribution else str(sweep[-1]["sparsity"])
    table = distribution[key]["by_layer_and_kind"]
    kinds = list(table)
    heatmap = go.Figure(go.Heatmap(z=[table[k] for k in kinds], y=kinds, colorscale="Viridis"))
    heatmap.update_layout(title=f"Masked weights per layer and matrix (m = {key})", xaxis_title="layer")
    pairs = distribution[key]["rotary_pair"]
    bars = go.Figure()
    for kind, counts in pairs.items():
        bars.add_bar(x=list(range(len(counts))), y=counts, name=f"{kind}_proj rows")
    bars.update_layout(
        title=f"Masked q/k entries by rotary pair (m = {key}; pair 0 rotates fastest)",
        xaxis_title="rotary pair i",
        yaxis_title="masked entries",
        barmode="group",
    )
    return [heatmap, bars]
