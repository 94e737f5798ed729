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

from steerscope.context import ExperimentContext
from steerscope.experiments.tom_sensitivity import phases, report
from steerscope.experiments.tom_sensitivity.config import TomSensitivityConfig
from steerscope.registry import Outcome, register


@register(
    "tom-sensitivity",
    TomSensitivityConfig,
    "Fisher-selected ToM-sensitive weights vs random masks (Wu et al. 2025)",
    data=("tom", "text"),
)
def run(config: TomSensitivityConfig, context: ExperimentContext) -> Outcome:
    """The evaluation data, the Fisher scores, the sweep of masks against random and mirror masks,
    report."""
    evaluation = phases.evaluation_data(config, context)
    fisher = phases.fisher_scores(config, context, evaluation)
    sweep = phases.sweep_masks(config, context.model, fisher, evaluation)
    return report.outcome(config, context, evaluation, sweep)
