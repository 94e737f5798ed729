"""`position-logits`: are attention logits a sum of a positional and a semantic term?

Han & Ji 2025 ("Computation Mechanism Behind LLM Position Generalization", arXiv 2503.13305)
report r = 0.959 between attention logits and the sum of a positional-relevance and a
semantic-importance term, and that the pattern is learned. Here, on generic text windows:

- real causal pre-softmax logits fitted by a(i - j) + b(i) + c(j), a shared by the prompts of a
  head, b and c per (prompt, position) (`steerscope.probes.position_logits.fit_additive`);
  r per layer and head, the median per layer and overall, and the within-query r (each query's
  mean removed, i.e. only what the softmax sees);
- virtual-distance tables q_i . R_d k_j fitted by f(d) + g(j) per query;
- the same for a randomly initialised model of the same config (same tokenizer and prompts).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go
import torch

from steerscope.context import ExperimentContext
from steerscope.data.suite import TextData
from steerscope.model import ModelLike
from steerscope.probes.position_logits import PAPER_R, PositionLogits, position_logits, randomly_initialised
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, NonEmpty, Range, Window


@dataclass
class PositionLogitsConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_prompts=4, window=48, distances=list(range(0, 48, 3)))
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_prompts": (("text", "eval"),)}
    n_prompts: Count = 16
    # tokens per prompt, BOS included, at most the text data's window (retokenised: +-1)
    window: Window = 64
    distances: Annotated[list[Annotated[int, Range(0)]], NonEmpty()] = field(
        default_factory=lambda: list(range(0, 64, 2))
    )
    share_distance: bool = True  # a(i - j) shared by all prompts of a head; False: fitted per prompt
    random_init: bool = True
    scatter_points: Count = 2000  # per scatter plot

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """`window - 1` tokens (at most the data's window), without BOS: the tokenizer adds it back."""
        return min(self.window, data_window) - 1, False


def generic_prompts(model: ModelLike, text: TextData, n: int, window: int, seed: int) -> list[str]:
    """`n` windows of `window` tokens of the "eval" split, as text."""
    windows = text.windows(model, n, window, seed, split="eval")
    return [model.tokenizer.decode(ids) for ids in windows]


def head_rows(result: PositionLogits) -> list[dict[str, Any]]:
    """One row per (layer, head): r, within-query r and virtual-distance r."""
    return [
        {
            "layer": layer,
            "head": head,
            "r": float(result.r[row, head]),
            "r_within_query": float(result.r_within_query[row, head]),
            "virtual_r": float(result.virtual_r[row, head]),
        }
        for row, layer in enumerate(result.layers)
        for head in range(result.r.shape[1])
    ]


def summarise(result: PositionLogits) -> dict[str, Any]:
    """Medians over heads per layer and overall, for the real and the virtual-distance fits."""
    rows = head_rows(result)

    def median(key: str) -> float:
        return statistics.median(row[key] for row in rows)

    def by_layer(values: torch.Tensor) -> list[float]:
        return [statistics.median(row.tolist()) for row in values]

    return {
        "per_head": rows,
        "median_r": median("r"),
        "median_r_by_layer": by_layer(result.r),
        "median_r_within_query": median("r_within_query"),
        "median_r_within_query_by_layer": by_layer(result.r_within_query),
        "virtual": {
            "median_r": median("virtual_r"),
            "median_r_by_layer": by_layer(result.virtual_r),
            "distances": result.distances,
        },
    }


def subsample(real: torch.Tensor, fitted: torch.Tensor, n: int, seed: int) -> dict[str, list[float]]:
    """At most `n` random (real, fitted) pairs, for a scatter plot."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(real.numel(), generator=generator)[:n]
    return {"real": real[keep].tolist(), "fitted": fitted[keep].tolist()}


@register(
    "position-logits",
    PositionLogitsConfig,
    "attention logits vs an additive distance + query + key fit, trained vs random init (Han & Ji 2025)",
    data=("text",),
)
def run(config: PositionLogitsConfig, context: ExperimentContext) -> Outcome:
    model, text = context.model, context.data.need("text")
    window, _ = config.text_window("n_prompts", text.window)
    prompts = generic_prompts(model, text, config.n_prompts, window, config.seed)
    context.used("text", eval_windows=len(prompts))
    trained = position_logits(
        model, prompts, distances=config.distances, share_distance=config.share_distance, progress=True
    )
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
    if config.random_init:
        random_model = randomly_initialised(model, seed=config.seed)
        random = summarise(
            position_logits(
                random_model,
                prompts,
                distances=config.distances,
                share_distance=config.share_distance,
                progress=True,
            )
        )
        results["random_init"] = random
        results["random_init_median_r"] = random["median_r"]
        results["random_init_median_r_within_query"] = random["median_r_within_query"]
        results["random_init_virtual_median_r"] = random["virtual"]["median_r"]
        del random_model
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
