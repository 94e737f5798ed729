"""`efficiency`: making a model think less at the same accuracy, as an accuracy vs length frontier.

On a reasoning model (a tokenizer with a single `</think>` token, e.g. `organism:reasoning`), every
method of `method` (efficiency, seal, budget, or all) is tuned on dev problems and traced on
held-out ones (`steering.frontier`):
- efficiency steering (arXiv 2506.15647): sample traces of the harvest problems, pair the shortest
  and the longest correct trace by thinking tokens, direction = concise minus verbose residual
  averaged over thinking tokens, added at generated thinking tokens (`efficiency_at="delimiters"`:
  read and added at thought delimiters only, where the model decides whether to check again);
- SEAL-style calibration (arXiv 2504.07986): step thoughts minus check and detour thoughts of the
  same traces, at thought delimiters, added at generated delimiters;
- budget (arXiv 2506.13752): a hard thinking-token budget (a share of the unsteered dev length),
  and the prompted brevity cue.
The layer and strength (or the budget) of each method are chosen on dev problems, disjoint from
the harvest problems: the fewest thinking tokens at an accuracy at most `tolerance` below
unsteered. On held-out problems each method is run at every strength of its chosen layer (every
budget), with 95% bootstrap intervals over problems and the paired change against unsteered.

On a model without `</think>` (Gemma 3 270M, `organism:length`) only efficiency steering applies:
harvest concise / verbose correct solutions of training problems (sampled; falls back to the
prompt-contrast variant when too few pairs), choose the layer by a trial of steering on the
harvested problems (`steering_effects`), then sweep the strength on held-out problems: accuracy
against generated tokens, next to no steering and to asking for brevity in the prompt.

Problems and prompts come from the context: few-shot word problems on a pretrained model, the
world's own sums and cue prompts on an organism, or a user's GSM8K-style problems asked the
model's way (they carry no written brief / thorough solutions, so the written prompt contrast is
not available for them).

Two experiments behind one name, each a list of phases: `run_thinking` (`thinking_phases`,
`thinking_report`) and `run_without_thinking` (`phases`, `report`); `config` holds the settings of
both.
"""

from __future__ import annotations

from typing import Any

from steerscope.context import ExperimentContext
from steerscope.experiments.efficiency import phases, report, thinking_phases, thinking_report
from steerscope.experiments.efficiency.config import EfficiencyConfig
from steerscope.model import ModelLike
from steerscope.registry import Outcome, register
from steerscope.steering.efficiency import efficiency_vector, pair_activations
from steerscope.steering.thinking import think_close_id


@register(
    "efficiency",
    EfficiencyConfig,
    "efficiency steering: concise-minus-verbose direction, length frontier",
    data=("problems",),
)
def run(config: EfficiencyConfig, context: ExperimentContext) -> Outcome:
    """The reasoning-model phases when the tokenizer has a single `</think>` token, else the
    phases of a model that does not think in tags."""
    model, data = context.model, context.data.need("problems")
    thinking = think_close_id(model.tokenizer) is not None
    train, heldout = phases.select_problems(config, context, thinking)
    if thinking:
        return run_thinking(config, model, data, train, heldout)
    return run_without_thinking(config, model, data, train, heldout)


def run_without_thinking(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list, heldout: list
) -> Outcome:
    """Efficiency steering at every generated token of a model that does not think in tags:
    harvest pairs, choose the layer, sweep the strength on held-out problems, report."""
    harvest, attempts = phases.harvest_training_pairs(config, model, data, train)
    activations = pair_activations(model, harvest)  # read by the layer trial and the vector
    layer, effects = phases.choose_layer(config, model, harvest, data.prompt, activations)
    vector, layer_scores = efficiency_vector(model, harvest, layer=layer, activations=activations)
    sweep, shown = phases.sweep_strengths(config, model, heldout, vector, layer, data.prompt)
    return report.outcome(
        config,
        model,
        (train, heldout),
        (harvest, attempts),
        (layer, effects, layer_scores),
        vector,
        sweep,
        shown,
    )


def run_thinking(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list, heldout: list
) -> Outcome:
    """Every method of `config.method` on a reasoning model: plan, harvest and grids, choice on
    dev, held-out frontier, report."""
    plan = thinking_phases.plan_thinking(config, model, data, train, heldout)
    harvest, grids, skipped = thinking_phases.steering_grids(config, model, data, plan)
    choice = thinking_phases.choose_on_dev(config, model, plan, grids)
    frontier = thinking_phases.trace_heldout(config, model, plan, choice)
    return thinking_report.outcome(config, model, plan, harvest, skipped, choice, frontier)
