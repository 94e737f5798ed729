"""`efficiency`: training-free efficiency steering (arXiv 2506.15647) on arithmetic problems.

Harvest concise / verbose correct solutions of training problems (sampled; falls back to the
prompt-contrast variant when too few pairs), build the concise-minus-verbose direction, choose the
layer by a trial of steering on the harvested problems (`steering_effects`), then sweep the steering
strength on held-out problems: accuracy against generated tokens (the frontier), next to no
steering and to asking for brevity in the prompt. Problems and prompts come from the context:
few-shot word problems on a pretrained model, the world's own sums and cue prompts on
`organism:length`, or a user's GSM8K-style problems asked the model's way (they carry no written
brief / thorough solutions, so the written prompt contrast is not available for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go

from steerscope.context import ExperimentContext
from steerscope.errors import InputError
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.steering.efficiency import (
    COMPLETIONS,
    Generation,
    Harvest,
    PromptFn,
    best_layer,
    efficiency_vector,
    evaluate,
    harvest_prompt_contrast,
    harvest_sampled,
    spread_layers,
    steering_effects,
)
from steerscope.steering.plots import layer_sweep_figure

VARIANTS = ("auto", "sampled", "prompt_contrast")


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
    RECORD_COUNTS: ClassVar[dict[str, tuple[str, str]]] = {
        "n_train": ("problems", "train"),
        "n_heldout": ("problems", "heldout"),
    }
    n_train: int = 32
    n_heldout: int = 24
    n_samples: int = 6
    temperature: float = 0.8
    max_new_tokens: int = 96
    strengths: list[float] = field(default_factory=lambda: [-0.1, 0.0, 0.05, 0.1, 0.2])
    steps: list[int] = field(default_factory=lambda: [1, 2, 3])
    min_pairs: int = 6  # fewer sampled pairs than this: fall back to the prompt contrast
    variant: str = "auto"  # auto | sampled | prompt_contrast
    contrast_completions: str = "model"  # model | written (prompt-contrast completions)
    layer: int | None = None  # default: the candidate layer steering to the fewest tokens per correct answer
    layer_candidates: int = 6  # layers tried, spread from the first to the last but one
    probe_strength: float = 0.2  # strength of the layer-choice trial on harvested problems
    n_probe: int = 16  # harvested problems solved per candidate layer
    batch_size: int = 16
    n_shown: int = 4  # held-out problems shown side by side in the report

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant: unknown {self.variant!r}; valid: {', '.join(VARIANTS)}")
        if self.contrast_completions not in COMPLETIONS:
            raise ValueError(
                f"contrast_completions: unknown {self.contrast_completions!r}; valid: {', '.join(COMPLETIONS)}"
            )
        if self.min_pairs < 2:
            raise ValueError("min_pairs: at least 2 pairs are needed (one to fit, one to choose the layer)")
        for name in ("layer_candidates", "n_probe"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.probe_strength == 0:
            raise ValueError("probe_strength: must be non-zero (it is the trial strength of each layer)")


def harvest_pairs(
    model: Any, config: EfficiencyConfig, problems: list, prompt: PromptFn
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
                    model, problems, source, config.max_new_tokens, config.batch_size, prompt
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
    model, data = context.model, context.data.need("problems")
    prompt = data.prompt
    train = data.problems(config.n_train, "train", config.seed, config.steps)
    heldout = data.problems(config.n_heldout, "heldout", config.seed, config.steps)
    context.used("problems", train=len(train), heldout=len(heldout))
    harvest, attempts = harvest_pairs(model, config, train, prompt)
    if len(harvest.pairs) < 2:
        raise InputError(
            f"efficiency: only {len(harvest.pairs)} concise/verbose pairs harvested from {len(train)} training "
            f"problems of {data.source} (at least 2 needed): {attempts}"
        )
    fallback = harvest.variant != "sampled" and config.variant == "auto"
    length = dict(max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, prompt=prompt)
    layer, effects = config.layer, []
    if layer is None:
        candidates = spread_layers(model.anatomy.n_layers, config.layer_candidates)
        effects = steering_effects(
            model, harvest, candidates, config.probe_strength, n_problems=config.n_probe, **length
        )
        layer = best_layer(effects)
    vector, layer_scores = efficiency_vector(model, harvest, layer=layer)
    baseline, baseline_gens = evaluate(model, heldout, **length)
    brevity, brevity_gens = evaluate(model, heldout, style="brief", **length)
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

    side_by_side = generations_table(heldout[: config.n_shown], shown)
    lines = [
        f"{model.source}; {len(train)} training problems, {len(heldout)} held-out",
        f"harvest variant: {harvest.variant}"
        + (
            f" (fallback: sampling gave {attempts[0]['n_pairs']} pairs < {config.min_pairs})"
            if fallback
            else ""
        )
        + f"; {len(harvest.pairs)} pairs; direction at L{layer}.resid_post"
        + (" (set in the config)" if config.layer is not None else ""),
        *(
            f"layer trial on {e['n']} harvested problems, "
            + ("unsteered" if e["layer"] is None else f"L{e['layer']} at {e['strength']:+g}")
            + f": accuracy {e['accuracy']:.2f}, mean tokens {e['mean_tokens']:.1f}"
            for e in effects
        ),
        f"no steering: accuracy {baseline['accuracy']:.2f}, mean tokens {baseline['mean_tokens']:.1f}",
        f"brevity prompt: accuracy {brevity['accuracy']:.2f}, mean tokens {brevity['mean_tokens']:.1f}",
        *(
            f"strength {s['strength']:+.2f}: accuracy {s['accuracy']:.2f}, mean tokens {s['mean_tokens']:.1f}"
            for s in sweep
        ),
    ]
    return Outcome(
        results={
            "model": model.source,
            "variant": harvest.variant,
            "fallback": fallback,
            "harvest": harvest.counts,
            "harvest_attempts": attempts,
            "layer": layer,
            "layer_scores": layer_scores,
            "layer_effects": effects,
            "direction_norm": vector.directions[next(iter(vector.directions))].norm().item(),
            "baseline": baseline,
            "prompted_brevity": brevity,
            "sweep": sweep,
            "example_pairs": [
                {"question": p.problem.question, "concise": p.concise, "verbose": p.verbose}
                for p in harvest.pairs[:3]
            ],
            "generations": side_by_side,
        },
        summary="\n".join(lines),
        figures=[
            frontier_figure(baseline, brevity, sweep),
            layer_sweep_figure(layer_scores, layer, "concise vs verbose solutions"),
        ],
        tables=[
            ("Strength sweep (relative strength: added norm / residual norm)", sweep),
            ("Held-out generations side by side", side_by_side),
            ("Layer choice: harvested problems steered at each candidate layer", effects),
            ("Harvest attempts", attempts),
        ],
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


def frontier_figure(baseline: dict, brevity: dict, sweep: list[dict]) -> go.Figure:
    """Accuracy against mean generated tokens, one point per steering strength."""
    figure = go.Figure()
    figure.add_scatter(
        x=[s["mean_tokens"] for s in sweep],
        y=[s["accuracy"] for s in sweep],
        text=[f"{s['strength']:+g}" for s in sweep],
        mode="lines+markers+text",
        textposition="top center",
        name="efficiency steering (strength)",
    )
    for name, point, symbol in (
        ("no steering", baseline, "circle-open"),
        ("brevity prompt", brevity, "star"),
    ):
        figure.add_scatter(
            x=[point["mean_tokens"]],
            y=[point["accuracy"]],
            mode="markers",
            marker=dict(size=14, symbol=symbol),
            name=name,
        )
    figure.update_layout(
        title="Held-out accuracy against solution length",
        xaxis_title="mean generated tokens",
        yaxis_title="accuracy",
        yaxis=dict(range=[-0.05, 1.05]),
    )
    return figure
