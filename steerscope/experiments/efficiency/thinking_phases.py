"""efficiency's phases on a reasoning model (a single `</think>` token, e.g. `organism:reasoning`):
plan (methods, splits, layers, delimiter), harvest and dev grids, choice on dev, held-out frontier."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerscope.errors import InputError
from steerscope.experiments.efficiency.config import METHODS, EfficiencyConfig
from steerscope.model import ModelLike
from steerscope.steering.choice import fewest_within_tolerance, mark_chosen
from steerscope.steering.efficiency import Harvest, harvest_sampled
from steerscope.steering.frontier import (
    BREVITY_CUE,
    UNSTEERED,
    Setting,
    budget_settings,
    dev_rows,
    heldout_frontier,
    solve,
    steering_settings,
)
from steerscope.steering.layer_choice import spread_layers
from steerscope.steering.reasoning import thinking_directions
from steerscope.steering.seal import seal_vector
from steerscope.steering.thinking import delimiter_ids


def thought_delimiter(tokenizer: Any, setting: str) -> str:
    """The thought delimiter: as set, or for "auto" a blank line ("\\n\\n", as in DeepSeek-R1
    traces) when some token ends with it, else a line break (`organism:reasoning`)."""
    if setting != "auto":
        return setting
    return "\n\n" if delimiter_ids(tokenizer, "\n\n") else "\n"


def method_settings(
    config: EfficiencyConfig,
    model: ModelLike,
    method: str,
    harvest: Harvest,
    traces: list[tuple[str, str]],
    layers: list[int],
    delimiter: str,
) -> list[Setting]:
    """The dev grid of a steering method: each layer's vector at each strength."""
    if method == "efficiency":
        if not harvest.pairs:
            raise InputError(
                f"no concise/verbose pair: {harvest.counts['n_correct']} correct of "
                f"{harvest.counts['n_samples']} sampled traces (two correct traces of different thinking "
                "lengths per problem are needed); raise n_samples or n_train"
            )
        vectors = thinking_directions(model, harvest, layers, read=config.efficiency_at, delimiter=delimiter)
        if config.efficiency_at == "thinking":
            return steering_settings(method, vectors, config.thinking_strengths)
        return steering_settings(
            method, vectors, config.delimiter_strengths, "delimiters", delimiter, "absolute"
        )
    try:
        vectors = {
            layer: seal_vector(model, traces, layer, delimiter, batch_size=config.batch_size)
            for layer in layers
        }
    except ValueError as error:
        raise InputError(f"{error} in the harvest traces (thought delimiter {delimiter!r})") from None
    return steering_settings(method, vectors, config.delimiter_strengths, "delimiters", delimiter, "absolute")


@dataclass
class ThinkingPlan:
    """What a reasoning-model run works with: its methods, problem splits, layers and delimiter,
    and the generation settings of every dev and held-out evaluation."""

    methods: list[str]
    dev: list
    harvest_problems: list
    heldout: list
    layers: list[int]
    delimiter: str
    generation: dict[str, Any]


def plan_thinking(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list, heldout: list
) -> ThinkingPlan:
    """The methods to run, the training problems split into dev and harvest, the dev-grid layers
    (checked against the model) and the thought delimiter."""
    n_dev = min(max(1, round(len(train) * config.dev_share)), len(train) - 1)
    n_layers = model.anatomy.n_layers
    layers = (
        [config.layer]
        if config.layer is not None
        else config.layers or spread_layers(n_layers, config.layer_candidates, skip_first=True)
    )
    if any(not 0 <= layer < n_layers for layer in layers):
        raise InputError(f"efficiency: layers {layers} must lie in 0..{n_layers - 1} for {model.source}")
    generation = dict(
        prompt=data.prompt,
        n_samples=config.n_eval_samples,
        temperature=config.temperature,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
    )
    return ThinkingPlan(
        methods=list(METHODS) if config.method == "all" else [config.method],
        dev=train[:n_dev],
        harvest_problems=train[n_dev:],
        heldout=heldout,
        layers=layers,
        delimiter=thought_delimiter(model.tokenizer, config.thought_delimiter),
        generation=generation,
    )


def steering_grids(
    config: EfficiencyConfig, model: ModelLike, data: Any, plan: ThinkingPlan
) -> tuple[Harvest | None, dict[str, list[Setting]], dict[str, str]]:
    """The harvest (when a steering method runs) and each steering method's dev grid; a method
    without what it needs is skipped with the reason (an error when no method is left)."""
    grids: dict[str, list[Setting]] = {}
    skipped: dict[str, str] = {}
    if not {"efficiency", "seal"} & set(plan.methods):
        return None, grids, skipped
    problems = plan.harvest_problems
    harvest = harvest_sampled(
        model, problems, config.n_samples, config.temperature, config.max_new_tokens,
        config.batch_size, config.seed, data.prompt, progress=True, by="n_thinking",
    )  # fmt: skip
    traces = [
        (data.prompt(p, "standard"), g.text)
        for p, gs in zip(problems, harvest.samples, strict=True)
        for g in gs
    ]
    for method in ("efficiency", "seal"):
        if method in plan.methods:
            try:
                grids[method] = method_settings(
                    config, model, method, harvest, traces, plan.layers, plan.delimiter
                )
            except InputError as error:
                skipped[method] = str(error)
    if not grids and "budget" not in plan.methods:
        raise InputError(f"efficiency: no method could run on {model.source}: " + "; ".join(skipped.values()))
    return harvest, grids, skipped


@dataclass
class DevChoice:
    """Unsteered on the dev problems, each method's grid (budgets included) with its dev rows,
    and the setting the rule chose per method (None: no setting thinks less within tolerance)."""

    unsteered: dict[str, Any]
    grids: dict[str, list[Setting]]
    rows: dict[str, list[dict[str, Any]]]
    chosen: dict[str, Setting | None]


def choose_on_dev(
    config: EfficiencyConfig, model: ModelLike, plan: ThinkingPlan, grids: dict[str, list[Setting]]
) -> DevChoice:
    """Unsteered on the dev problems, the budget grid (shares of its thinking length), and each
    method's dev grid with the setting the rule chooses."""
    generation = dict(plan.generation, seed=config.seed + 1)
    unsteered = {**UNSTEERED.describe(), **solve(model, plan.dev, UNSTEERED, **generation)[0]}
    if "budget" in plan.methods:
        length = unsteered["mean_thinking_tokens"]
        budgets = sorted({max(2, round(share * length)) for share in config.budget_shares})
        grids = {**grids, "budget": budget_settings(budgets)}
    rows: dict[str, list[dict[str, Any]]] = {}
    chosen: dict[str, Setting | None] = {}
    for method, settings in grids.items():
        measured = dev_rows(model, plan.dev, settings, progress=True, **generation)
        index = fewest_within_tolerance(unsteered, measured, config.tolerance)
        rows[method] = mark_chosen(measured, index)
        chosen[method] = None if index is None else settings[index]
    return DevChoice(unsteered, grids, rows, chosen)


def trace_heldout(
    config: EfficiencyConfig,
    model: ModelLike,
    plan: ThinkingPlan,
    choice: DevChoice,
) -> dict[str, list[dict[str, Any]]]:
    """The held-out frontier: unsteered, each steering method at every strength of its chosen
    layer (the middle grid layer if none was chosen), every budget and the brevity cue."""
    generation = dict(plan.generation, seed=config.seed + 2)
    unsteered, unsteered_samples = solve(model, plan.heldout, UNSTEERED, **generation)
    frontier: dict[str, list[dict[str, Any]]] = {
        "unsteered": [{**UNSTEERED.describe(), **unsteered, "chosen": False}]
    }
    for method, settings in choice.grids.items():
        pick = choice.chosen[method]
        if method == "budget":
            traced = [*settings, BREVITY_CUE]
        else:
            layer = pick.layer if pick is not None else plan.layers[len(plan.layers) // 2]
            traced = [s for s in settings if s.layer == layer]
        rows = heldout_frontier(model, plan.heldout, traced, unsteered_samples, progress=True, **generation)
        frontier[method] = [{**row, "chosen": s == pick} for row, s in zip(rows, traced, strict=True)]
    return frontier
