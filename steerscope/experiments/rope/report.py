"""What rope writes: the results (anatomy, pair norms, dominant pairs, BOS attention, query-BOS
angles, what the ToM and random masks change), the summary and the perturbation table."""

from __future__ import annotations

import math
import statistics
from dataclasses import fields
from typing import Any

import torch
from torch import Tensor

from steerscope.experiments.rope.config import RopeConfig
from steerscope.experiments.rope.figures import figures
from steerscope.model import Model
from steerscope.probes.masks import mask_counts
from steerscope.probes.rope import (
    RotaryChange,
    RotaryStats,
    change_summary,
    dominant_frequencies_by_layer_type,
    dominant_pairs,
    massive_pairs,
    stats_change,
)
from steerscope.registry import Outcome


def outcome(
    config: RopeConfig,
    model: Model,
    measured: tuple[RotaryStats, dict[str, Tensor], RotaryStats, list[RotaryStats]],
) -> Outcome:
    """The results (what the prompts show unperturbed, what each mask changes) with the summary,
    figures and perturbation table."""
    before, masks, targeted, randoms = measured
    lam = config.massive_lambda
    targeted_change = stats_change(targeted, before)
    random_changes = [stats_change(r, before) for r in randoms]
    random_summaries = [change_summary(c, before, lam) for c in random_changes]
    anatomy = model.anatomy
    results = {
        "model": model.source,
        "anatomy": {
            "n_heads": anatomy.n_heads,
            "n_kv_heads": anatomy.n_kv_heads,
            "head_dim": anatomy.head_dim,
            "layer_types": list(anatomy.layer_types),
            "rope_bases": list(anatomy.rope_bases),
        },
        "data": {
            "n_windows": config.n_windows,
            "n_tom": config.n_tom,
            "n_tokens": before.n_tokens,
            "n_queries": before.n_queries,
        },
        "frequencies": before.frequencies.tolist(),
        "pair_norms": {"q": _rounded(before.q_pair_norm), "k": _rounded(before.k_pair_norm)},
        "dominant_pairs": dominant_pairs(before, lam),
        "dominant_by_layer_type": dominant_frequencies_by_layer_type(before, lam),
        "bos_attention": {
            "before": _rounded(before.bos_attention),
            "targeted": _rounded(targeted.bos_attention),
            "random": [_rounded(r.bos_attention) for r in randoms],
        },
        "qk_angle": {
            "before": _angles(before),
            "targeted": _angles(targeted),
            "random": [_angles(r) for r in randoms],
        },
        "perturbation": {
            "sparsity": config.sparsity,
            "n_perturbed": mask_counts(masks),
            "targeted": {
                "summary": change_summary(targeted_change, before, lam),
                "by_layer": _by_layer(targeted_change, before, lam),
                "changes": _change_dict(targeted_change),
            },
            "random": {
                "seeds": [1000 + s for s in range(config.random_seeds)],
                "summary": _mean_of(random_summaries),
                "summary_sd": _sd_of(random_summaries),
                "by_layer": _mean_by_layer([_by_layer(c, before, lam) for c in random_changes]),
                "changes": [_change_dict(c) for c in random_changes],
            },
        },
    }
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=figures(results),
        tables=[("Perturbation summary (mean |change|; random = mean over seeds)", _summary_rows(results))],
    )


def _rounded(tensor: Tensor, digits: int = 5) -> list:
    """Nested lists of floats rounded to `digits` significant digits (keeps results.json small)."""
    return (
        torch.tensor(
            [float(f"{x:.{digits}g}") for x in tensor.double().reshape(-1).tolist()], dtype=torch.float64
        )
        .reshape(tensor.shape)
        .tolist()
    )


def _angles(stats: RotaryStats) -> dict[str, list]:
    return {"cos": _rounded(stats.bos_cos), "pair_cos": _rounded(stats.bos_pair_cos)}


def _change_dict(change: RotaryChange) -> dict[str, list]:
    return {f.name: _rounded(getattr(change, f.name)) for f in fields(change)}


def _by_layer(change: RotaryChange, before: RotaryStats, lam: float) -> dict[str, list[float]]:
    """Per layer: mean |relative change| of massive and other pair norms (q, k), and mean |BOS attention change|."""
    out: dict[str, list[float]] = {}
    for name, relative, norms in (
        ("q", change.q_pair_norm_relative, before.q_pair_norm),
        ("k", change.k_pair_norm_relative, before.k_pair_norm),
    ):
        massive = massive_pairs(norms, lam)
        for group, selected in (("massive", massive), ("other", ~massive)):
            out[f"{name}_{group}_rel_change"] = [
                float(relative[i][selected[i]].abs().mean()) if bool(selected[i].any()) else float("nan")
                for i in range(relative.shape[0])
            ]
    out["bos_attention_abs_change"] = change.bos_attention.abs().mean(-1).tolist()
    return out


def _mean_of(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean over seeds of each entry; counts (the same in every seed) stay integers."""
    return {
        key: rows[0][key] if isinstance(rows[0][key], int) else _nanmean([row[key] for row in rows])
        for key in rows[0]
    }


def _sd_of(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.stdev([row[key] for row in rows]) if len(rows) > 1 else 0.0 for key in rows[0]}


def _mean_by_layer(rows: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    return {
        key: [_nanmean(list(values)) for values in zip(*(r[key] for r in rows), strict=True)]
        for key in rows[0]
    }


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.fmean(finite) if finite else float("nan")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def summary_text(results: dict[str, Any]) -> str:
    """Which rotary pairs are massive per layer type (the three most frequent), how much the ToM
    mask changes massive and other pairs and BOS attention against random masks, BOS attention."""
    data, perturbation = results["data"], results["perturbation"]
    frequencies, types = results["frequencies"], results["anatomy"]["layer_types"]
    lines = [
        f"{results['model']}: {data['n_windows']} generic windows + {data['n_tom']} ToM stories, "
        f"{data['n_tokens']} tokens",
        "massive rotary pairs (pair x how many layer-heads, its frequency):",
    ]
    for kind, entry in results["dominant_by_layer_type"].items():
        row = types.index(kind)
        top = {
            name: ", ".join(
                f"{pair}x{count} ({frequencies[row][int(pair)]:.2g})"
                for pair, count in sorted(entry[name].items(), key=lambda item: -item[1])[:3]
            )
            or "none"
            for name in ("q", "k")
        }
        lines.append(
            f"  {kind} (base {entry['rope_base']:g}, {entry['n_layers']} layers): q {top['q']}; k {top['k']}"
        )
    targeted, random = perturbation["targeted"]["summary"], perturbation["random"]["summary"]
    spread = perturbation["random"]["summary_sd"]
    lines.append(
        f"ToM mask (m={perturbation['sparsity']:g}, {perturbation['n_perturbed']} weights) vs random masks "
        "(mean±sd): mean |relative change| of "
        + "; ".join(
            f"{label} {_fmt(targeted[key])} vs {_fmt(random[key])}±{_fmt(spread[key])}"
            for key, label in (
                ("q_massive_rel_change", "massive q pairs"),
                ("q_other_rel_change", "other q pairs"),
                ("k_massive_rel_change", "massive k pairs"),
            )
        )
        + f"; |BOS attention change| {_fmt(targeted['bos_attention_abs_change'])} vs "
        f"{_fmt(random['bos_attention_abs_change'])}"
    )
    before = results["bos_attention"]["before"]
    by_type: dict[str, list[float]] = {}
    for row, kind in enumerate(types):
        by_type.setdefault(kind, []).extend(before[row])
    lines.append(
        "BOS attention (mean over layers and heads): "
        + "; ".join(f"{kind} {statistics.fmean(v):.3f}" for kind, v in by_type.items())
    )
    return "\n".join(lines)


def _summary_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for label in ("targeted", "random"):
        s = results["perturbation"][label]["summary"]
        rows.append(
            {
                "mask": label,
                "q massive |rel|": s["q_massive_rel_change"],
                "q other |rel|": s["q_other_rel_change"],
                "k massive |rel|": s["k_massive_rel_change"],
                "k other |rel|": s["k_other_rel_change"],
                "q massive |abs|": s["q_massive_abs_change"],
                "q other |abs|": s["q_other_abs_change"],
                "BOS cos |change|": s["bos_cos_abs_change"],
                "BOS attention |change|": s["bos_attention_abs_change"],
            }
        )
    return rows
