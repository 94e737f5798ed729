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

from steerscope.context import ExperimentContext
from steerscope.experiments.position_logits import phases, report
from steerscope.experiments.position_logits.config import PositionLogitsConfig
from steerscope.registry import Outcome, register


@register(
    "position-logits",
    PositionLogitsConfig,
    "attention logits vs an additive distance + query + key fit, trained vs random init (Han & Ji 2025)",
    data=("text",),
)
def run(config: PositionLogitsConfig, context: ExperimentContext) -> Outcome:
    """The prompts, the fit on the trained model, the fit at random init, report."""
    prompts = phases.prompts(config, context)
    trained = phases.fit_trained(config, context.model, prompts)
    random = phases.fit_random_init(config, context.model, prompts)
    return report.outcome(config, context, prompts, trained, random)
