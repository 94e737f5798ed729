"""`spare`: steer which source the model answers from (context or memory) by editing SAE
features at the last prompt token (SpARE, Zhao et al. 2025, arXiv 2410.15999), against a
difference-of-means edit at the same layers and position, with the settings of both chosen on a
dev split and the held-out facts touched once.

The memorised facts are split into held-out and the rest (the conflict data's own split), and the
rest by a hash of each record into `fit` (features, targets, mean difference) and `dev` (choosing
p, alpha and the layer set of SpARE, and the strength of difference of means, per direction; each
SpARE setting is also run as its random-feature control, so the grid shows which settings, if
any, move answers more than as many random features do). The
chosen settings then run once on the held-out facts beside no edit and a random-feature control
(as many features per layer and set, the same targets rule), with the C<->M transitions and 95%
bootstrap intervals. Conflict records, prompts and SAE training text come from the context, so
the same run serves a pretrained model, an organism and a user's NQ-Swap-style records.

The package: `config` (settings), `phases` (each phase a function a notebook can call on its own),
`report` (results, tables, summary), `figures` and `planted` (on an organism with planted
directions, how the selected features align with them).
"""

from __future__ import annotations

from steerscope.context import ExperimentContext
from steerscope.experiments.spare import phases, report
from steerscope.experiments.spare.config import SpareConfig, layer_sets
from steerscope.experiments.spare.planted import planted_results
from steerscope.registry import Outcome, register
from steerscope.steering.experiment_saes import check_last_token_saes


@register(
    "spare",
    SpareConfig,
    "SpARE: SAE-feature edit steering context vs memory, chosen on dev, against difference of means",
    data=("conflicts", "text"),
)
def run(config: SpareConfig, context: ExperimentContext) -> Outcome:
    """Split the facts, fit features, choose on dev, touch the held-out facts once, report."""
    sets = layer_sets(config, context.model.anatomy.n_layers)
    check_last_token_saes(context, config.sae_train_settings(config.seed), config.demos)
    facts = phases.split_facts(config, context)
    features = phases.fit_features(config, context, facts, sets)
    chosen = phases.choose_on_dev(config, context, facts, features, sets)
    held_out = phases.measure_held_out(config, context, facts, features, chosen)
    results = report.spare_results(config, context, facts, features, chosen, held_out)
    results.update(planted_results(context.model, features, chosen))  # {} but on a planted organism
    return report.outcome(config, results)
