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

from steerscope.context import ExperimentContext
from steerscope.experiments.rope import phases, report
from steerscope.experiments.rope.config import RopeConfig
from steerscope.registry import Outcome, register


@register(
    "rope",
    RopeConfig,
    "massive rotary pairs, query-BOS angles, BOS attention; ToM mask vs random",
    data=("tom", "text"),
)
def run(config: RopeConfig, context: ExperimentContext) -> Outcome:
    """Rotary statistics unperturbed, under the ToM mask and under random masks, then the report."""
    measured = phases.measure_perturbations(config, context)
    return report.outcome(config, context.model, measured)
