"""`conflict-probe`: can a linear probe on one layer's activations at the last prompt token tell
a context that contradicts the model's memory from one that agrees with it? (Zhao et al. 2025,
the probing companion of SpARE, arXiv 2410.16090.) Split by fact, several restarts. The conflict
records come from the context: the natural fact table with neutral demonstrations for a pretrained
model, held-out facts with unmarked prompts for an organism, or the user's NQ-Swap-style records. Beside the probes, a reference readout
thresholds the model's own top next-token probability (a conflict splits the answer between two
words): when it separates the prompts and a linear probe does not, the model has the information
but not as a linear direction at that site.

With `sae_probe=True`, beside the dense residual probe at each of `sae_layers`, a k-sparse probe
reads the SAE codes of the same activations (`steerscope.probes.sparse_probe`: at most
`sae_probe_k` features chosen along the L1 logistic path, or by mutual information), on the same
splits by fact, and names the features it uses with their top-activating prompts. The SAEs are the
ones `spare` and `steerscope build sae:SITE` cache (same settings, same texts: same SAEs); the
cache lacks them until one of those has run, and training them is minutes per layer on Gemma 3
270M at the default 1.1M tokens, so the SAE probe is off by default.

On an organism with planted directions (organism:sources-planted) results.json adds `planted`:
per layer, the planted conflict flag's own held-out AUC and the cosine of the probe's direction
with it (`planted.planted_readout`). Its flag was trained on the facts asked with contexts in
training, which `facts="trained"` probes; the default candidates are facts it never saw so."""

from __future__ import annotations

from steerscope.context import ExperimentContext
from steerscope.experiments.conflict_probe import phases, planted, report
from steerscope.experiments.conflict_probe.config import ConflictProbeConfig
from steerscope.registry import Outcome, register
from steerscope.steering.experiment_saes import check_last_token_saes


@register(
    "conflict-probe",
    ConflictProbeConfig,
    "linear probes detecting a context-memory conflict per layer",
    data=("conflicts", "text"),
)
def run(config: ConflictProbeConfig, context: ExperimentContext) -> Outcome:
    """The memorised facts, one capture of their prompts, splits by fact, dense probes, the
    SAE-feature probes when asked, the planted flag's readout on a planted organism, report."""
    if config.sae_probe:
        check_last_token_saes(context, config.sae_train_settings(config.seed), config.demos)
    tried, facts = phases.memorised_facts(config, context)
    prompts, acts, labels = phases.capture_pairs(config, context, facts)
    splits = phases.split_by_fact(config, context, tried, facts)
    rows, reference = phases.dense_probes(context.model, acts, labels, splits)
    sae_rows = phases.sae_probes(config, context, acts, labels, splits, prompts) if config.sae_probe else None
    readout = planted.planted_readout(context.model, acts, labels, splits)
    return report.outcome(config, context.model, (tried, facts), (rows, reference), sae_rows, readout)
