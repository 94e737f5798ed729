"""tom-sensitivity's phases: the evaluation data, the Fisher scores on ToM stories and generic text,
and the sweep of masks (ToM-specific, random, generic-specific) with their evaluations."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerscope.context import ExperimentContext
from steerscope.experiments.tom_sensitivity.config import TomSensitivityConfig, default_sweep
from steerscope.model import Model
from steerscope.probes.lm_metrics import perplexity
from steerscope.probes.mask_layout import counts_by_layer_and_kind, rotary_pair_counts
from steerscope.probes.masks import mask_counts, mean_replacement, sensitive_mask_pair, under_random_masks
from steerscope.probes.tom_eval import tom_scores
from steerscope.probes.tom_fisher import tom_and_generic_fisher


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


@dataclass
class Evaluation:
    """What every mask is judged on: held-out ToM stories and generic text windows."""

    items: list[Any]
    windows: list[list[int]]


@dataclass
class Sweep:
    """The unperturbed scores, one row per sparsity (targeted, random mean and spread, mirror)
    and where each sparsity's mask lies (by layer and kind, by rotary pair)."""

    baseline: dict[str, float]
    rows: list[dict[str, Any]]
    distribution: dict[str, Any]


def evaluation_data(config: TomSensitivityConfig, context: ExperimentContext) -> Evaluation:
    """The evaluation stories and windows (templates and text the Fisher scores never see)."""
    tom, text = context.data.need("tom"), context.data.need("text")
    items = tom.items("eval", config.n_eval_tom, config.seed)
    windows = text.windows(context.model, config.n_eval_windows, config.window, config.seed, "eval", bos=True)
    return Evaluation(items, windows)


def fisher_scores(
    config: TomSensitivityConfig, context: ExperimentContext, evaluation: Evaluation
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fisher scores per weight on ToM stories (loss on the answer) and on generic text."""
    tom, text = context.data.need("tom"), context.data.need("text")
    scores = tom_and_generic_fisher(context.model, tom, text, config.n_fisher, config.window, config.seed)
    context.used("tom", fisher=config.n_fisher, eval=len(evaluation.items))
    context.used("text", fisher_windows=config.n_fisher, eval_windows=len(evaluation.windows))
    return scores


def sweep_masks(
    config: TomSensitivityConfig,
    model: Model,
    fisher: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
    evaluation: Evaluation,
) -> Sweep:
    """Unperturbed, then per sparsity the ToM-specific mask, `random_seeds` random masks of the same
    counts and the mirror (generic-specific) mask, each mean-replaced and evaluated (a mask that
    selects nothing, as the paper's smallest fractions may on a small model, takes the baseline's
    scores)."""
    tom_f, generic_f = fisher
    sparsities = config.sparsities or default_sweep(model, config.quick)
    bar = tqdm(total=1 + len(sparsities) * (2 + config.random_seeds), desc="evaluations (unperturbed, masks)")

    def evaluate() -> dict[str, float]:
        scores = _evaluate(model, evaluation.items, evaluation.windows)
        bar.update()
        return scores

    def unchanged() -> dict[str, float]:
        bar.update()
        return dict(baseline)

    def measure_for(masks: dict[str, torch.Tensor]) -> Callable[[], dict[str, float]]:
        """An empty mask changes no weight: its scores are the baseline's, not evaluated again."""
        return evaluate if mask_counts(masks) else unchanged

    baseline = evaluate()
    sweep, distribution = [], {}
    for sparsity in sparsities:
        masks, mirror = sensitive_mask_pair(tom_f, generic_f, sparsity)
        with mean_replacement(model, masks, config.scale):
            targeted = measure_for(masks)()
        # random masks take the counts of `masks`, so they are empty where it is
        randoms = under_random_masks(model, masks, config.random_seeds, config.scale, measure_for(masks))
        with mean_replacement(model, mirror, config.scale):
            generic_specific = measure_for(mirror)()
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
    return Sweep(baseline, sweep, distribution)
