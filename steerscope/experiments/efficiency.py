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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

import plotly.graph_objects as go
from tqdm.auto import tqdm

from steerscope.context import ExperimentContext
from steerscope.errors import InputError
from steerscope.model import ModelLike
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, Layer, NewTokens, NonEmpty, NonZero, Range
from steerscope.steering.choice import fewest_within_tolerance, mark_chosen
from steerscope.steering.efficiency import (
    Harvest,
    efficiency_vector,
    harvest_prompt_contrast,
    harvest_sampled,
)
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
from steerscope.steering.generation import Generation, PromptFn
from steerscope.steering.layer_choice import best_layer, evaluate, spread_layers, steering_effects
from steerscope.steering.plots import frontier_figure, layer_sweep_figure
from steerscope.steering.reasoning import thinking_directions
from steerscope.steering.seal import seal_vector
from steerscope.steering.thinking import delimiter_ids, think_close_id
from steerscope.steering.vector import SteeringVector

METHODS = ("efficiency", "seal", "budget")


@dataclass
class EfficiencyConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(
        n_train=6,
        n_heldout=6,
        n_samples=4,
        max_new_tokens=48,
        strengths=[0.0, 0.05, 0.1, 0.2],
        layer_candidates=3,
    )
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_train": (("problems", "train"),),
        "n_heldout": (("problems", "heldout"),),
    }
    n_train: Count = 32
    n_heldout: Count = 24
    n_samples: Count = 6
    temperature: Annotated[float, Range(0, low_open=True)] = 0.8
    max_new_tokens: NewTokens = 96
    strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [-0.1, 0.0, 0.05, 0.1, 0.2])
    # arithmetic steps of the generated problems (a user's problems are taken as they are)
    steps: Annotated[list[Annotated[int, Range(1, 3)]], NonEmpty()] = field(default_factory=lambda: [1, 2, 3])
    # fewer sampled pairs than this: fall back to the prompt contrast (one pair fits, one picks the layer)
    min_pairs: Annotated[int, Range(2)] = 6
    variant: Literal["auto", "sampled", "prompt_contrast"] = "auto"
    contrast_completions: Literal["model", "written"] = "model"  # the prompt contrast's completions
    # default: the candidate layer steering to the fewest tokens per correct answer
    layer: Layer | None = None
    layer_candidates: Count = 6  # layers tried, spread from the first to the last but one
    # strength of the layer-choice trial on harvested problems
    probe_strength: Annotated[float, NonZero()] = 0.2
    n_probe: Count = 16  # harvested problems solved per candidate layer
    batch_size: Count = 16
    n_shown: Annotated[int, Range(0)] = 4  # held-out problems shown side by side in the report
    # Reasoning models (a single </think> token) only:
    method: Literal["efficiency", "seal", "budget", "all"] = "all"
    # dev-grid layers (default: `layer_candidates` middle layers)
    layers: Annotated[list[Layer], NonEmpty()] | None = None
    # share of the n_train problems kept for the dev choice (the rest harvest)
    dev_share: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.34
    n_eval_samples: Count = 4  # sampled traces per dev / held-out problem (at `temperature`)
    # thinking (2506.15647) | delimiters (read and added at thought delimiters)
    efficiency_at: Literal["thinking", "delimiters"] = "thinking"
    # relative to ||h||
    thinking_strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.05, 0.1, 0.2])
    # absolute, as SEAL
    delimiter_strengths: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # shares of the unsteered dev thinking length
    budget_shares: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.5, 0.75, 1.0]
    )
    thought_delimiter: Annotated[str, NonEmpty()] = "auto"  # auto: "\n\n" if a token ends with it, else "\n"
    # dev choice: accuracy at most this far below unsteered
    tolerance: Annotated[float, Range(0, 1)] = 0.02


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
    if not thinking and config.method not in ("efficiency", "all"):
        raise InputError(
            f"efficiency: method={config.method} needs a reasoning model (a tokenizer with a single "
            f"</think> token), which {model.source} is not; use method=efficiency"
        )
    train = data.problems(config.n_train, "train", config.seed, config.steps)
    heldout = data.problems(config.n_heldout, "heldout", config.seed, config.steps)
    context.used("problems", train=len(train), heldout=len(heldout))
    if thinking:
        return run_thinking(config, model, data, train, heldout)
    return run_without_thinking(config, model, data, train, heldout)


# ---- a model that does not think in tags: harvest, layer, strength sweep on held-out problems


def run_without_thinking(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list, heldout: list
) -> Outcome:
    """Efficiency steering at every generated token of a model that does not think in tags:
    harvest pairs, choose the layer, sweep the strength on held-out problems, report."""
    harvest, attempts = harvest_pairs(model, config, train, data.prompt)
    if len(harvest.pairs) < 2:
        raise InputError(
            f"efficiency: only {len(harvest.pairs)} concise/verbose pairs harvested from {len(train)} training "
            f"problems of {data.source} (at least 2 needed): {attempts}"
        )
    layer, effects = choose_layer(config, model, harvest, data.prompt)
    vector, layer_scores = efficiency_vector(model, harvest, layer=layer)
    sweep, shown = sweep_strengths(config, model, heldout, vector, layer, data.prompt)
    results = {
        "model": model.source,
        "method": "efficiency",
        "problems": {"train": len(train), "heldout": len(heldout)},
        "variant": harvest.variant,
        "fallback": harvest.variant != "sampled" and config.variant == "auto",
        "harvest": harvest.counts,
        "harvest_attempts": attempts,
        "layer": layer,
        "layer_scores": layer_scores,
        "layer_effects": effects,
        "direction_norm": vector.directions[next(iter(vector.directions))].norm().item(),
        "baseline": sweep["baseline"],
        "prompted_brevity": sweep["brevity"],
        "sweep": sweep["sweep"],
        "example_pairs": [
            {"question": p.problem.question, "concise": p.concise, "verbose": p.verbose}
            for p in harvest.pairs[:3]
        ],
        "generations": generations_table(heldout[: config.n_shown], shown),
    }
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=[
            frontier_figure(results["baseline"], results["prompted_brevity"], results["sweep"]),
            layer_sweep_figure(layer_scores, layer, "concise vs verbose solutions"),
        ],
        tables=[
            ("Strength sweep (relative strength: added norm / residual norm)", results["sweep"]),
            ("Held-out generations side by side", results["generations"]),
            ("Layer choice: harvested problems steered at each candidate layer", effects),
            ("Harvest attempts", attempts),
        ],
    )


def choose_layer(
    config: EfficiencyConfig, model: ModelLike, harvest: Harvest, prompt: PromptFn
) -> tuple[int, list[dict[str, Any]]]:
    """The layer to steer: `config.layer`, or the candidate whose direction, steering the harvested
    problems, gives the fewest tokens per correct answer; returns it and the trial's rows."""
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
    returns the summaries (`baseline`, `brevity`, `sweep`) and the generations to show."""
    length = dict(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, prompt=prompt)
    bar = tqdm(
        total=2 + sum(s != 0 for s in config.strengths), desc="held-out (unsteered, brevity, strengths)"
    )
    baseline, baseline_gens = evaluate(model, heldout, **length)
    bar.update()
    brevity, brevity_gens = evaluate(model, heldout, style="brief", **length)
    bar.update()
    sweep, shown = [], {"no steering": baseline_gens, "brevity prompt": brevity_gens}
    for strength in config.strengths:
        summary, gens = (
            (baseline, baseline_gens)
            if strength == 0
            else evaluate(model, heldout, vector, strength, **length)
        )
        sweep.append({"strength": strength, "layer": layer, **summary})
        if strength != 0:
            shown[f"steered {strength:+g}"] = gens
            bar.update()
    bar.close()
    return {"baseline": baseline, "brevity": brevity, "sweep": sweep}, shown


def summary_text(results: dict[str, Any]) -> str:
    """The direction's harvest and layer, then on held-out problems each strength's (and the
    brevity prompt's) change of length at its change of accuracy, against no steering."""
    base, problems = results["baseline"], results["problems"]
    fallback = (
        f" (sampling gave {results['harvest_attempts'][0]['n_pairs']} pairs, too few)"
        if results["fallback"]
        else ""
    )
    return "\n".join(
        [
            f"{results['model']}: {problems['train']} training, {problems['heldout']} held-out problems; "
            f"direction at L{results['layer']}.resid_post from {results['harvest']['n_pairs']} "
            f"{results['variant']} pairs{fallback}",
            f"held-out, against no steering (accuracy {base['accuracy']:.2f}, {base['mean_tokens']:.1f} tokens):",
            f"  brevity prompt: {_against(results['prompted_brevity'], base)}",
            *(
                f"  strength {row['strength']:+g}: {_against(row, base)}"
                for row in results["sweep"]
                if row["strength"] != 0
            ),
        ]
    )


def _against(row: dict[str, Any], base: dict[str, Any]) -> str:
    tokens = row["mean_tokens"] / base["mean_tokens"] - 1 if base["mean_tokens"] else float("nan")
    return (
        f"tokens {tokens:+.0%} at accuracy {row['accuracy'] - base['accuracy']:+.2f} "
        f"({row['accuracy']:.2f}, {row['mean_tokens']:.1f} tokens)"
    )


def generations_table(problems: list, shown: dict[str, list[Generation]]) -> list[dict[str, Any]]:
    """One row per problem and condition: what the model wrote, its length and correctness."""
    return [
        {
            "question": problem.question,
            "answer": problem.answer,
            "condition": condition,
            "tokens": gens[i].n_tokens,
            "correct": gens[i].correct,
            "solution": gens[i].text,
        }
        for i, problem in enumerate(problems)
        for condition, gens in shown.items()
    ]


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


# ---- a reasoning model: every method tuned on dev problems, traced on held-out problems


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
    without what it needs is skipped with the reason."""
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


def run_thinking(
    config: EfficiencyConfig, model: ModelLike, data: Any, train: list, heldout: list
) -> Outcome:
    """Every method of `config.method` on a reasoning model: plan, harvest and grids, choice on
    dev, held-out frontier, report."""
    plan = plan_thinking(config, model, data, train, heldout)
    harvest, grids, skipped = steering_grids(config, model, data, plan)
    if not grids and "budget" not in plan.methods:
        raise InputError(f"efficiency: no method could run on {model.source}: " + "; ".join(skipped.values()))
    choice = choose_on_dev(config, model, plan, grids)
    frontier = trace_heldout(config, model, plan, choice)
    results = {
        "model": model.source,
        "methods": plan.methods,
        "skipped": skipped,
        "thought_delimiter": plan.delimiter,
        "layers": plan.layers,
        "splits": {"harvest": len(plan.harvest_problems), "dev": len(plan.dev), "heldout": len(heldout)},
        "harvest": None if harvest is None else harvest.counts,
        "dev_unsteered": choice.unsteered,
        "dev_grid": choice.rows,
        "chosen": {m: None if s is None else s.describe() for m, s in choice.chosen.items()},
        "frontier": frontier,
        "target": {
            method: verdict(next((r for r in rows if r["chosen"]), None))
            for method, rows in frontier.items()
            if method != "unsteered"
        },
    }
    return Outcome(
        results=results,
        summary=thinking_summary(results, config),
        figures=[thinking_frontier_figure(frontier)],
        tables=[
            (
                "Held-out frontier (95% intervals over problems; change against unsteered)",
                [row for rows in frontier.values() for row in rows],
            ),
            *((f"Dev grid: {method}", rows) for method, rows in choice.rows.items()),
        ],
    )


#: The issue's target: thinking tokens cut by at least 20% at accuracy within 2 points.
TARGET_CUT, TARGET_ACCURACY = -0.20, -0.02


def verdict(row: dict[str, Any] | None) -> dict[str, Any]:
    """Whether a chosen held-out row meets the target (None: nothing chosen on dev)."""
    if row is None:
        return {"chosen": None, "meets_target": False}
    return {
        "chosen": {k: row[k] for k in ("layer", "strength", "budget")},
        "thinking_change": row["thinking_change"],
        "accuracy_change": row["accuracy_change"],
        "meets_target": row["thinking_change"] <= TARGET_CUT and row["accuracy_change"] >= TARGET_ACCURACY,
    }


def thinking_summary(results: dict[str, Any], config: EfficiencyConfig) -> str:
    """Unsteered held-out accuracy and thinking length, then per method the setting chosen on dev:
    its change of thinking tokens at its change of accuracy (95% intervals) and the target's verdict."""
    splits, frontier = results["splits"], results["frontier"]
    [unsteered] = frontier["unsteered"]
    lines = [
        f"{results['model']}: {splits['harvest']} harvest, {splits['dev']} dev, {splits['heldout']} held-out "
        f"problems, {config.n_eval_samples} traces each at temperature {config.temperature}",
        f"unsteered: accuracy {_ci(unsteered['accuracy'], unsteered['accuracy_ci'], '.3f')}, thinking "
        f"tokens {_ci(unsteered['mean_thinking_tokens'], unsteered['mean_thinking_ci'], '.1f')}",
        *(f"{method} skipped: {reason}" for method, reason in results["skipped"].items()),
    ]
    for method, result in results["target"].items():
        row = next((r for r in frontier[method] if r["chosen"]), None)
        if row is None:
            lines.append(f"{method}: nothing chosen on dev (no setting thinks less within the tolerance)")
            continue
        lines.append(
            f"{Setting(row['method'], row['layer'], row['strength'], row['budget']).label} (chosen on dev): "
            f"thinking {_ci(row['thinking_change'], row['thinking_change_ci'], '+.1%')} at accuracy "
            f"{_ci(row['accuracy_change'], row['accuracy_change_ci'], '+.3f')}; "
            f"{'meets' if result['meets_target'] else 'misses'} the target (>= 20% fewer thinking tokens, "
            "accuracy within 2 points)"
        )
    return "\n".join(lines)


def _ci(value: float, interval: list[float], spec: str) -> str:
    """`value [low, high]`, each formatted with `spec`."""
    return f"{value:{spec}} [{interval[0]:{spec}}, {interval[1]:{spec}}]"


def thinking_frontier_figure(frontier: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Held-out accuracy against mean thinking tokens with 95% intervals, one trace per method;
    the setting chosen on dev is drawn larger."""
    figure = go.Figure()
    for method, rows in frontier.items():
        figure.add_scatter(
            x=[r["mean_thinking_tokens"] for r in rows],
            y=[r["accuracy"] for r in rows],
            error_x=dict(
                type="data",
                symmetric=False,
                array=[r["mean_thinking_ci"][1] - r["mean_thinking_tokens"] for r in rows],
                arrayminus=[r["mean_thinking_tokens"] - r["mean_thinking_ci"][0] for r in rows],
            ),
            error_y=dict(
                type="data",
                symmetric=False,
                array=[r["accuracy_ci"][1] - r["accuracy"] for r in rows],
                arrayminus=[r["accuracy"] - r["accuracy_ci"][0] for r in rows],
            ),
            text=[Setting(r["method"], r["layer"], r["strength"], r["budget"]).label for r in rows],
            marker=dict(size=[14 if r["chosen"] else 8 for r in rows]),
            mode="markers" if method == "unsteered" else "lines+markers",
            name=method,
        )
    figure.update_layout(
        title="Held-out accuracy against thinking length (95% intervals over problems)",
        xaxis_title="mean thinking tokens",
        yaxis_title="accuracy",
        yaxis=dict(range=[-0.05, 1.05]),
    )
    return figure
