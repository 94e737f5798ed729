"""efficiency's problems (`select_problems`, the first phase of both experiments), then its phases on a
model that does not think in tags (Gemma 3 270M, `organism:length`): harvest concise / verbose
pairs, choose the layer, sweep the strength on held-out problems."""

from __future__ import annotations

from typing import Any

from steerscope.context import ExperimentContext
from steerscope.errors import InputError
from steerscope.experiments.efficiency.config import EfficiencyConfig
from steerscope.model import ModelLike
from steerscope.steering.efficiency import (
    Harvest,
    PairActivations,
    harvest_prompt_contrast,
    harvest_sampled,
)
from steerscope.steering.generation import Generation, PromptFn, Setting
from steerscope.steering.layer_choice import (
    best_layer,
    evaluate_settings,
    spread_layers,
    steering_effects,
)
from steerscope.steering.vector import SteeringVector


def select_problems(
    config: EfficiencyConfig, context: ExperimentContext, thinking: bool
) -> tuple[list, list]:
    """Phase 0 of both experiments: the training and held-out problems (a method other than
    efficiency steering needs a reasoning model)."""
    model, data = context.model, context.data.need("problems")
    if not thinking and config.method not in ("efficiency", "all"):
        raise InputError(
            f"efficiency: method={config.method} needs a reasoning model (a tokenizer with a single "
            f"</think> token), which {model.source} is not; use method=efficiency"
        )
    train = data.problems(config.n_train, "train", config.seed, config.steps)
    heldout = data.problems(config.n_heldout, "heldout", config.seed, config.steps)
    context.used("problems", train=len(train), heldout=len(heldout))
    return train, heldout


def harvest_pairs(
    model: ModelLike, config: EfficiencyConfig, problems: list, prompt: PromptFn
) -> tuple[Harvest, list[dict]]:
    """The harvest the config asks for; `auto` tries sampling, then the prompt contrast with the
    model's completions, then with the written ones (when the problems have them), until
    `min_pairs` pairs. Returns every attempt."""
    written = all(p.solutions for p in problems)
    if config.contrast_completions == "written" and config.variant != "sampled" and not written:
        raise InputError(
            "efficiency: contrast_completions=written needs written brief and thorough solutions, which "
            "these problems do not have; use contrast_completions=model"
        )
    attempts: list[Harvest] = []
    if config.variant in ("auto", "sampled"):
        attempts.append(
            harvest_sampled(
                model,
                problems,
                config.n_samples,
                config.temperature,
                config.max_new_tokens,
                config.batch_size,
                config.seed,
                prompt,
                progress=True,
            )
        )
    if config.variant == "prompt_contrast" or (
        config.variant == "auto" and len(attempts[-1].pairs) < config.min_pairs
    ):
        sources = [config.contrast_completions]
        if config.variant == "auto" and config.contrast_completions == "model" and written:
            sources.append("written")
        for source in sources:
            attempts.append(
                harvest_prompt_contrast(
                    model, problems, source, config.max_new_tokens, config.batch_size, prompt, progress=True
                )
            )
            if len(attempts[-1].pairs) >= config.min_pairs:
                break
    enough = [h for h in attempts if len(h.pairs) >= config.min_pairs]
    chosen = enough[0] if enough else max(attempts, key=lambda h: len(h.pairs))
    return chosen, [{"variant": h.variant, **h.counts} for h in attempts]


def harvest_training_pairs(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list
) -> tuple[Harvest, list[dict]]:
    """The concise / verbose pairs of the training problems (`harvest_pairs`), at least two."""
    harvest, attempts = harvest_pairs(model, config, train, data.prompt)
    if len(harvest.pairs) < 2:
        raise InputError(
            f"efficiency: only {len(harvest.pairs)} concise/verbose pairs harvested from {len(train)} training "
            f"problems of {data.source} (at least 2 needed): {attempts}"
        )
    return harvest, attempts


def choose_layer(
    config: EfficiencyConfig,
    model: ModelLike,
    harvest: Harvest,
    prompt: PromptFn,
    activations: PairActivations | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """The layer to steer: `config.layer`, or the candidate whose direction, steering the harvested
    problems, gives the fewest tokens per correct answer; returns it and the trial's rows
    (`activations`: the harvest's `pair_activations`, when already captured)."""
    if config.layer is not None:
        return config.layer, []
    effects = steering_effects(
        model,
        harvest,
        spread_layers(model.anatomy.n_layers, config.layer_candidates),
        config.probe_strength,
        n_problems=config.n_probe,
        progress=True,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        prompt=prompt,
        activations=activations,
    )
    return best_layer(effects), effects


def sweep_strengths(
    config: EfficiencyConfig,
    model: ModelLike,
    heldout: list,
    vector: SteeringVector,
    layer: int,
    prompt: PromptFn,
) -> tuple[dict[str, Any], dict[str, list[Generation]]]:
    """Held-out problems unsteered, after the brevity prompt, and steered at every strength;
    returns the summaries (`baseline`, `brevity`, `sweep`) and the generations to show. All of them
    share their generation calls (`evaluate_settings`); strength 0 is the unsteered run."""
    length = dict(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, prompt=prompt)
    steered = [s for s in config.strengths if s != 0]
    settings = [Setting()] + [Setting(vector, s) for s in steered] + [Setting(style="brief")]
    (baseline, baseline_gens), *by_strength, (brevity, brevity_gens) = evaluate_settings(
        model, heldout, settings, progress=True, **length
    )
    results = iter(by_strength)
    sweep, shown = [], {"no steering": baseline_gens, "brevity prompt": brevity_gens}
    for strength in config.strengths:
        summary, gens = (baseline, baseline_gens) if strength == 0 else next(results)
        sweep.append({"strength": strength, "layer": layer, **summary})
        if strength != 0:
            shown[f"steered {strength:+g}"] = gens
    return {"baseline": baseline, "brevity": brevity, "sweep": sweep}, shown
