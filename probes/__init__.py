"""What reads the model (steerscope.probes): ToM sensitivity (Fisher scores, masks, evaluation),
RoPE analysis, position-logit decomposition, knowledge-conflict probes, linear probes and
k-sparse probes on SAE codes."""

from steerscope.probes.fisher import LossSample, cached_fisher_scores, fisher_scores
from steerscope.probes.knowledge import answer_greedy, behaviour_counts, conflict_pairs, known_conflicts
from steerscope.probes.linear_probe import LinearProbe, probe_metrics, train_probe
from steerscope.probes.lm_metrics import continuation_logprobs, greedy_continuations, perplexity
from steerscope.probes.mask_layout import counts_by_layer_and_kind, rotary_pair_counts
from steerscope.probes.masks import (
    mask_counts,
    mean_replacement,
    random_masks,
    sensitive_mask_pair,
    sensitive_masks,
)
from steerscope.probes.position_logits import PAPER_R, position_logits, randomly_initialised
from steerscope.probes.rope import RotaryStats, change_summary, dominant_pairs, rotary_stats, stats_change
from steerscope.probes.sparse_probe import SparseProbe, train_sparse_probe
from steerscope.probes.tom_eval import tom_scores
from steerscope.probes.tom_fisher import tom_and_generic_fisher, tom_fisher_samples

__all__ = [
    "PAPER_R",
    "LinearProbe",
    "LossSample",
    "RotaryStats",
    "SparseProbe",
    "answer_greedy",
    "behaviour_counts",
    "cached_fisher_scores",
    "change_summary",
    "conflict_pairs",
    "continuation_logprobs",
    "counts_by_layer_and_kind",
    "dominant_pairs",
    "fisher_scores",
    "greedy_continuations",
    "known_conflicts",
    "mask_counts",
    "mean_replacement",
    "perplexity",
    "position_logits",
    "probe_metrics",
    "random_masks",
    "randomly_initialised",
    "rotary_pair_counts",
    "rotary_stats",
    "sensitive_mask_pair",
    "sensitive_masks",
    "stats_change",
    "tom_and_generic_fisher",
    "tom_fisher_samples",
    "tom_scores",
    "train_probe",
    "train_sparse_probe",
]
