"""`tom-sensitivity`: Wu et al. 2025 ("How LLMs encode Theory-of-Mind", arXiv 2504.04238) as a
reusable probe, with the random-mask baseline the paper lacks.

Fisher scores on ToM stories (loss on the answer) and on generic text; per-matrix masks
top_k(F_tom) AND NOT top_k(F_generic) over a sweep of fractions; mean replacement of the masked
weights; ToM accuracy/margin (evaluation stories use templates the scoring never saw) and generic
perplexity, against random masks with the same count in every matrix over several seeds, and
against the mirror mask top_k(F_generic) AND NOT top_k(F_tom) (weights specific to generic text):
a ToM-specific set should hurt ToM more than both, and hurt perplexity less than the mirror.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go
from tqdm.auto import tqdm

from steerscope.context import ExperimentContext
from steerscope.model import Model
from steerscope.probes.lm_metrics import perplexity
from steerscope.probes.mask_layout import counts_by_layer_and_kind, rotary_pair_counts
from steerscope.probes.masks import mask_counts, mean_replacement, random_masks, sensitive_masks
from steerscope.probes.tom_eval import tom_scores
from steerscope.probes.tom_fisher import tom_and_generic_fisher
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, NonEmpty, Range, Window

HEADLINE_SPARSITY = 1e-5  # the paper's 0.001% (scaled with the sweep on small models)
PAPER_SWEEP = (1e-6, 3e-6, 1e-5, 3e-5, 1e-4)
MIN_HEADLINE_WEIGHTS = 5  # per median matrix: below this, the paper's fractions select ~nothing


@dataclass
class TomSensitivityConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_fisher=24, n_eval_tom=48, n_eval_windows=8, random_seeds=2)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_fisher": (("tom", "fisher"), ("text", "fisher")),
        "n_eval_tom": (("tom", "eval"),),
        "n_eval_windows": (("text", "eval"),),
    }
    # fractions of each matrix's weights; default: `default_sweep(model, quick)`
    sparsities: Annotated[list[Annotated[float, Range(0, 1, low_open=True)]], NonEmpty()] | None = None
    n_fisher: Count = 100  # samples per data set for the Fisher scores
    n_eval_tom: Count = 200
    n_eval_windows: Count = 40
    window: Window | None = None  # tokens per generic window; default: the text data's
    random_seeds: Count = 3
    scale: float = 0.0  # W[M] <- mu + scale * (W[M] - mu); 0 is mean replacement

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """Fisher and evaluation windows alike: `window` tokens (or the data's), BOS included."""
        return self.window, True


def default_sweep(model: Model, quick: bool = False) -> list[float]:
    """The paper's fractions 1e-6..1e-4, scaled up by powers of ten for small models until the
    headline fraction keeps at least `MIN_HEADLINE_WEIGHTS` entries of the median linear matrix
    (Gemma 3 270M: unscaled; a 1M-parameter organism: x100). `quick`: the headline and the top."""
    params = dict(model.hf.named_parameters())
    sizes = sorted(params[name].numel() for name in model.anatomy.linear_weights().values())
    median = sizes[len(sizes) // 2]
    scale = 1.0
    while median * HEADLINE_SPARSITY * scale < MIN_HEADLINE_WEIGHTS and scale < 1e4:
        scale *= 10
    sweep = [fraction * scale for fraction in PAPER_SWEEP]
    headline = PAPER_SWEEP.index(HEADLINE_SPARSITY)
    return sweep[headline::2] if quick else sweep


def _evaluate(model: Model, items: list[Any], windows: list[list[int]]) -> dict[str, float]:
    """ToM scores and perplexity (with progress bars); accuracy per story kind as `tom_acc[kind]`
    when stories have kinds."""
    scores = tom_scores(model, items, progress=True)
    return {
        "tom_acc": scores["acc"],
        "tom_margin": scores["margin"],
        "tom_greedy_match": scores["greedy_match"],
        "tom_fb_acc": scores.get("fb_acc", float("nan")),
        "tom_tb_acc": scores.get("tb_acc", float("nan")),
        **{f"tom_acc[{kind}]": row["acc"] for kind, row in scores.get("by_kind", {}).items()},
        "ppl": perplexity(model, windows, progress=True),
    }


def _mean_and_spread(runs: list[dict[str, float]]) -> dict[str, float]:
    summary: dict[str, float] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        summary[key] = statistics.fmean(values)
        summary[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


@register(
    "tom-sensitivity",
    TomSensitivityConfig,
    "Fisher-selected ToM-sensitive weights vs random masks (Wu et al. 2025)",
    data=("tom", "text"),
)
def run(config: TomSensitivityConfig, context: ExperimentContext) -> Outcome:
    model = context.model
    tom, text = context.data.need("tom"), context.data.need("text")
    eval_items = tom.items("eval", config.n_eval_tom, config.seed)
    eval_windows = text.windows(model, config.n_eval_windows, config.window, config.seed, "eval", bos=True)
    tom_f, generic_f = tom_and_generic_fisher(model, tom, text, config.n_fisher, config.window, config.seed)
    context.used("tom", fisher=config.n_fisher, eval=len(eval_items))
    context.used("text", fisher_windows=config.n_fisher, eval_windows=len(eval_windows))

    sparsities = config.sparsities or default_sweep(model, config.quick)
    bar = tqdm(total=1 + len(sparsities) * (2 + config.random_seeds), desc="evaluations (unperturbed, masks)")

    def evaluate() -> dict[str, float]:
        scores = _evaluate(model, eval_items, eval_windows)
        bar.update()
        return scores

    baseline = evaluate()
    sweep, distribution = [], {}
    for sparsity in sparsities:
        masks = sensitive_masks(tom_f, generic_f, sparsity)
        with mean_replacement(model, masks, config.scale):
            targeted = evaluate()
        randoms = []
        for seed in range(config.random_seeds):
            with mean_replacement(model, random_masks(masks, seed=1000 + seed), config.scale):
                randoms.append(evaluate())
        mirror = sensitive_masks(generic_f, tom_f, sparsity)
        with mean_replacement(model, mirror, config.scale):
            generic_specific = evaluate()
        sweep.append(
            {
                "sparsity": sparsity,
                "n_perturbed": mask_counts(masks),
                **targeted,
                "random": _mean_and_spread(randoms),
                "generic_mask": {"n_perturbed": mask_counts(mirror), **generic_specific},
            }
        )
        distribution[str(sparsity)] = {
            "by_layer_and_kind": counts_by_layer_and_kind(model.anatomy, masks),
            "rotary_pair": rotary_pair_counts(model.anatomy, masks),
        }
    bar.close()
    results = {
        "model": model.source,
        "baseline": baseline,
        "sweep": sweep,
        "mask_distribution": distribution,
        "data": {
            "n_fisher_tom": config.n_fisher,
            "n_fisher_generic": config.n_fisher,
            "n_eval_tom": len(eval_items),
            "n_eval_windows": len(eval_windows),
            "window": len(eval_windows[0]) if eval_windows else None,
            "suite": context.data.name,
        },
    }
    return Outcome(
        results=results,
        summary=_summary(results),
        figures=[
            *_sweep_figures(baseline, sweep),
            *_distribution_figures(
                distribution, sweep, default_sweep(model)[PAPER_SWEEP.index(HEADLINE_SPARSITY)]
            ),
        ],
        tables=[
            (
                "Sweep (targeted; random = mean over seeds; generic mask = the mirror)",
                [_row(s) for s in sweep],
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
