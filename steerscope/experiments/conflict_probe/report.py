"""What conflict-probe writes: the results, the summary, the per-layer tables and the accuracy figures
(dense probes, and beside them the SAE-feature probes)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from steerscope.data.records import Conflict
from steerscope.experiments.conflict_probe.config import ConflictProbeConfig
from steerscope.experiments.conflict_probe.phases import SITE_KINDS
from steerscope.model import ModelLike
from steerscope.registry import Outcome


def outcome(
    config: ConflictProbeConfig,
    model: ModelLike,
    facts: tuple[list[Conflict], list[Conflict]],
    dense: tuple[list[dict[str, Any]], dict[str, float]],
    sae_rows: list[dict[str, Any]] | None,
    planted: dict[str, Any] | None = None,
) -> Outcome:
    """The results (dense probes per site, the best, the reference, the SAE-feature probes, the
    planted flag's readout) with the summary, figures and tables."""
    (tried, memorised), (rows, reference) = facts, dense
    n_tried = len(tried)
    best = max(rows, key=lambda r: r["acc"])
    results = {
        "model": model.source,
        "n_memorised": len(memorised),
        "n_candidates": n_tried,
        "facts": config.facts,
        "layers": rows,
        "best": best,
        "reference_top_probability": reference,
        "sae_probe": None,
    }
    summary = (
        f"{model.source}: {len(memorised)} memorised facts of {n_tried} tried; conflict vs agreeing "
        f"context, probes split by fact, {config.restarts} restarts.\nbest: L{best['layer']}.{best['site']} "
        f"accuracy {best['acc']:.3f} ± {best['acc_sd']:.3f}, AUC {best['auc']:.3f}, AUPRC {best['auprc']:.3f}\n"
        f"reference (threshold on the top answer probability): accuracy {reference['acc']:.3f} "
        f"± {reference['acc_sd']:.3f}, AUC {reference['auc']:.3f}"
    )
    figures = [accuracy_figure(rows, reference["acc"])]
    tables = [("Per layer", rows)]
    if sae_rows is not None:
        dense_rows = {r["layer"]: r for r in rows if r["site"] == "resid_post"}
        results["sae_probe"] = {
            "selection": config.sae_probe_selection,
            "k": config.sae_probe_k,
            "layers": sae_rows,
        }
        summary += "\n" + sae_summary(sae_rows, dense_rows, config)
        figures.append(sae_figure(rows, sae_rows))
        tables += [
            ("Dense vs SAE-feature probe (resid_post)", sae_table(sae_rows, dense_rows)),
            ("SAE-probe features and their top-activating prompts", feature_table(sae_rows)),
        ]
    if planted is not None:
        results["planted"] = planted
        summary += "\n" + planted_summary(planted)
        tables.append(("Planted conflict flag (resid_post)", planted["layers"]))
    return Outcome(results=results, summary=summary, figures=figures, tables=tables)


def planted_summary(planted: dict[str, Any]) -> str:
    """One line per layer: the planted flag's held-out AUC and the probe direction's cosine with it."""
    lines = [
        f"planted conflict flag (planted at {planted['site']}): flag AUC, probe cos with flag / option plane"
    ]
    lines += [
        f"  L{row['layer']}: {row['flag_auc']:.3f}, {row['probe_cos_flag']:+.2f} / {row['probe_cos_options']:.2f}"
        for row in planted["layers"]
    ]
    return "\n".join(lines)


def accuracy_figure(rows: list[dict[str, Any]], reference: float | None = None) -> go.Figure:
    """Held-out probe accuracy per layer, one line per site kind, with restart spread, and the
    top-probability reference's accuracy if given."""
    lines = {kind: [r for r in rows if r["site"] == kind] for kind in SITE_KINDS}
    return _accuracy_lines(lines, "Conflict detection: held-out probe accuracy per layer", reference)


def _accuracy_lines(
    lines: dict[str, list[dict[str, Any]]], title: str, reference: float | None = None
) -> go.Figure:
    """One line of held-out accuracy per layer (restart spread as error bars) per named row list,
    chance, and the top-probability reference's accuracy if given."""
    figure = go.Figure()
    for name, mine in lines.items():
        figure.add_scatter(
            x=[r["layer"] for r in mine],
            y=[r["acc"] for r in mine],
            error_y=dict(type="data", array=[r["acc_sd"] for r in mine]),
            mode="lines+markers",
            name=name,
        )
    figure.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    if reference is not None:
        figure.add_hline(y=reference, line_dash="dash", annotation_text="top-probability reference")
    figure.update_layout(title=title, xaxis_title="layer", yaxis_title="accuracy")
    return figure


def sae_summary(
    sae_rows: list[dict[str, Any]], dense: dict[int, dict[str, Any]], config: ConflictProbeConfig
) -> str:
    """Summary lines: the SAE-feature probe against the dense residual probe, per layer."""
    lines = [
        f"SAE-feature probe ({config.sae_probe_selection}, at most {config.sae_probe_k} features) vs dense "
        "resid_post probe, held-out accuracy (AUC):"
    ]
    for row in sae_rows:
        base = dense[row["layer"]]
        used = ", ".join(f"{f['feature']}" for f in row["features"][:4])
        lines.append(
            f"  L{row['layer']}: SAE {row['acc']:.3f} ± {row['acc_sd']:.3f} ({row['auc']:.3f}) with "
            f"{row['n_features']} features [{used}{', ...' if row['n_features'] > 4 else ''}]; "
            f"dense {base['acc']:.3f} ± {base['acc_sd']:.3f} ({base['auc']:.3f})"
        )
    return "\n".join(lines)


def sae_table(sae_rows: list[dict[str, Any]], dense: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per SAE layer: dense and SAE-feature probe metrics and the features used."""
    return [
        {
            "layer": row["layer"],
            "dense_acc": dense[row["layer"]]["acc"],
            "dense_auc": dense[row["layer"]]["auc"],
            "sae_acc": row["acc"],
            "sae_acc_sd": row["acc_sd"],
            "sae_auc": row["auc"],
            "n_features": row["n_features"],
            "sae_fvu": row["sae_quality"]["fvu"],
            "sae_ce_recovered": row["sae_quality"]["ce_loss_recovered"],
            "features (weight)": ", ".join(f"{f['feature']} ({f['weight']:+.2f})" for f in row["features"]),
        }
        for row in sae_rows
    ]


def feature_table(sae_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (layer, feature, top-activating prompt): what each probe feature fires on."""
    return [
        {
            "layer": row["layer"],
            "feature": feature["feature"],
            "weight": feature["weight"],
            "in_splits": feature["in_splits"],
            "activation": top["activation"],
            "conflict": top["conflict"],
            "prompt (last block)": top["text"],
        }
        for row in sae_rows
        for feature in row["features"]
        for top in feature["top_prompts"]
    ]


def sae_figure(rows: list[dict[str, Any]], sae_rows: list[dict[str, Any]]) -> go.Figure:
    """Held-out accuracy per layer of the dense resid_post probe and of the SAE-feature probe,
    with restart spread."""
    lines = {
        "dense resid_post probe": [r for r in rows if r["site"] == "resid_post"],
        "SAE-feature probe": sae_rows,
    }
    return _accuracy_lines(
        lines, "Conflict detection: dense vs SAE-feature probe, held-out accuracy per layer"
    )
