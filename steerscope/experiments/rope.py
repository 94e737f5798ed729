"""`rope`: massive rotary pairs, query-BOS angles and BOS attention, and how ToM-sensitive weights move them.

Jin et al. 2025 ("Massive values in self-attention modules are the key to contextual knowledge
understanding") find a few low-frequency rotary pairs of queries and keys with very large norms;
Wu et al. 2025 (arXiv 2504.04238) link their ToM-sensitive weights to such RoPE effects. This
experiment measures per layer and head: pair norms of post-RoPE q and k (real tokens only), the
massive pairs (norm > lambda x head mean) and their frequencies from the layer's own base, the
angle between each query and the BOS key (whole vector and per pair) and the attention on BOS;
then the same with the ToM-sensitive mask of `tom-sensitivity` mean-replaced, against random
masks with the same count in every matrix.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor
from tqdm.auto import tqdm

from steerscope.context import ExperimentContext
from steerscope.data.suite import DataSuite
from steerscope.errors import InputError
from steerscope.model import Model
from steerscope.probes.masks import mask_counts, mean_replacement, random_masks, sensitive_masks
from steerscope.probes.rope import (
    RotaryChange,
    RotaryStats,
    change_summary,
    dominant_frequencies_by_layer_type,
    dominant_pairs,
    massive_pairs,
    rotary_stats,
    stats_change,
)
from steerscope.probes.tom_fisher import tom_and_generic_fisher
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, Range, Window


@dataclass
class RopeConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_windows=8, n_tom=8, n_fisher=24, random_seeds=1)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_tom": (("tom", "eval"),),
        "n_fisher": (("tom", "fisher"), ("text", "fisher")),
        "n_windows": (("text", "eval"),),
    }
    n_windows: Annotated[int, Range(0)] = 32  # generic text windows measured
    # tokens per generic window before the BOS (at most the text data's window)
    window: Window = 64
    n_tom: Annotated[int, Range(0)] = 32  # ToM evaluation stories measured
    # massive pair: norm > lambda x the head's mean pair norm
    massive_lambda: Annotated[float, Range(0, low_open=True)] = 5.0
    # mask fraction per matrix (Wu et al.'s 0.001%)
    sparsity: Annotated[float, Range(0, 1, low_open=True)] = 1e-5
    random_seeds: Count = 3
    scale: float = 0.0  # W[M] <- mu + scale * (W[M] - mu); 0 is mean replacement
    n_fisher: Count = 100  # Fisher samples per data set; as tom-sensitivity, so its cache is reused
    # generic Fisher window of tom-sensitivity (cache key)
    fisher_window: Window | None = None
    batch_size: Count = 8

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """Measured windows: at most the data's window, BOS excluded; Fisher windows as tom-sensitivity's."""
        if field == "n_fisher":
            return self.fisher_window, True
        return min(self.window, data_window - 1), False

    def __post_init__(self) -> None:
        if self.n_windows + self.n_tom == 0:
            raise InputError("n_windows and n_tom are both 0; there is nothing to measure")


def measured_prompts(model: Model, data: DataSuite, config: RopeConfig) -> tuple[list[str], list[str]]:
    """Generic text windows (eval split, decoded to text) and ToM evaluation stories (an
    organism's windows are as short as its training documents)."""
    text = data.need("text")
    window, _ = config.text_window("n_windows", text.window)
    windows = text.windows(model, config.n_windows, window, config.seed, split="eval")
    stories = [item.story for item in data.need("tom").items("eval", config.n_tom, config.seed)]
    return [model.tokenizer.decode(w) for w in windows], stories


def tom_masks(model: Model, data: DataSuite, config: RopeConfig) -> dict[str, Tensor]:
    """The ToM-sensitive mask of `tom-sensitivity` at `config.sparsity`, from the shared Fisher cache."""
    tom_f, generic_f = tom_and_generic_fisher(
        model, data.need("tom"), data.need("text"), config.n_fisher, config.fisher_window, config.seed
    )
    return sensitive_masks(tom_f, generic_f, config.sparsity)


def measure_perturbations(
    config: RopeConfig, context: ExperimentContext
) -> tuple[RotaryStats, dict[str, Tensor], RotaryStats, list[RotaryStats]]:
    """The rotary statistics of the measured prompts unperturbed, under the ToM mask and under
    each random mask; returns them with the ToM masks."""
    model = context.model
    windows, stories = measured_prompts(model, context.data, config)
    prompts = windows + stories
    bar = tqdm(total=2 + config.random_seeds, desc="measurements (unperturbed, masks)")

    def measure() -> RotaryStats:
        stats = rotary_stats(model, prompts, batch_size=config.batch_size, progress=True)
        bar.update()
        return stats

    before = measure()
    masks = tom_masks(model, context.data, config)
    context.used("tom", fisher=config.n_fisher, eval=len(stories))
    context.used("text", fisher_windows=config.n_fisher, eval_windows=len(windows))
    with mean_replacement(model, masks, config.scale):
        targeted = measure()
    randoms = []
    for seed in range(config.random_seeds):
        with mean_replacement(model, random_masks(masks, seed=1000 + seed), config.scale):
            randoms.append(measure())
    bar.close()
    return before, masks, targeted, randoms


@register(
    "rope",
    RopeConfig,
    "massive rotary pairs, query-BOS angles, BOS attention; ToM mask vs random",
    data=("tom", "text"),
)
def run(config: RopeConfig, context: ExperimentContext) -> Outcome:
    model = context.model
    before, masks, targeted, randoms = measure_perturbations(config, context)
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


# --- results helpers ----------------------------------------------------------------------------


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


# --- figures (from results only, so a notebook can re-plot results.json) ------------------------


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
