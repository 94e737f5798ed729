"""`steer-demo`: build a sentiment steering vector from the project's own contrast set, pick the
layer on held-out pairs, show generations at several strengths and the projection per layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import plotly.graph_objects as go

from steerscope.capture import capture, tokenize
from steerscope.data.sentiment import NEUTRAL_PROMPTS, sentiment_pairs
from steerscope.experiments import ExperimentConfig, Outcome, register
from steerscope.loading import load
from steerscope.sites import Site
from steerscope.steering import diff_of_means, steer, sweep_layers
from steerscope.steering.plots import layer_sweep_figure


@dataclass
class SteerDemoConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_train=16, n_heldout=8, max_new_tokens=12)
    n_train: int = 32
    n_heldout: int = 16
    strengths: list[float] = field(default_factory=lambda: [-0.25, -0.1, 0.0, 0.1, 0.25])
    max_new_tokens: int = 20
    layer: int | None = None  # default: the best held-out separation, last layer excluded


@register("steer-demo", SteerDemoConfig, "sentiment steering vector: layer sweep, generations, projections")
def run(config: SteerDemoConfig) -> Outcome:
    model = load(config.model)
    n_layers = model.anatomy.n_layers
    pairs = sentiment_pairs(config.n_train + config.n_heldout, seed=config.seed)
    train, heldout = pairs[: config.n_train], pairs[config.n_train :]
    positive, negative = [p for p, _ in train], [n for _, n in train]
    held_pos, held_neg = [p for p, _ in heldout], [n for _, n in heldout]

    sweep = sweep_layers(model, (positive, negative), (held_pos, held_neg))
    layer = config.layer
    if layer is None:
        layer = max(sweep[:-1], key=lambda s: s["separation"])["layer"]
    vector = diff_of_means(
        model, positive, negative, Site(layer, "resid_post"), description="sentiment: positive minus negative"
    )

    batch = tokenize(model, list(NEUTRAL_PROMPTS))
    del batch["position_ids"]
    n_prompt = batch["input_ids"].shape[1]
    generations = []
    for strength in config.strengths:
        with steer(model, vector, strength=strength):
            out = model.generate(**batch, max_new_tokens=config.max_new_tokens, do_sample=False)
        for prompt, row in zip(NEUTRAL_PROMPTS, out, strict=True):
            text = model.tokenizer.decode(row[n_prompt:], skip_special_tokens=True)
            generations.append({"strength": strength, "prompt": prompt, "continuation": text})

    direction = vector.directions[str(Site(layer, "resid_post"))]
    unit = direction / direction.norm()
    sites = [Site(i, "resid_post") for i in range(n_layers)]
    groups = {
        "positive (held out)": held_pos,
        "negative (held out)": held_neg,
        "neutral prompts": list(NEUTRAL_PROMPTS),
    }
    projection = {}
    for name, prompts in groups.items():
        acts = capture(model, prompts, sites, reduce="last", progress=False)
        projection[name] = [
            (acts[s] @ unit / acts[s].norm(dim=-1)).mean().item() for s in sites
        ]  # cosine with the direction, so layers of different norm compare

    figures = [projection_figure(projection, layer), layer_sweep_figure(sweep, layer)]
    lines = [f"{model.source}; vector at L{layer}.resid_post (difference of means, {len(train)} pairs)"]
    for g in generations:
        if g["prompt"] == NEUTRAL_PROMPTS[0]:
            lines.append(f"strength {g['strength']:+.2f}: {g['continuation']!r}")
    return Outcome(
        results={
            "model": model.source,
            "layer": layer,
            "layer_sweep": sweep,
            "generations": generations,
            "projection_per_layer": projection,
            "direction_norm": direction.norm().item(),
        },
        summary="\n".join(lines),
        figures=figures,
        tables=[
            ("Generations (relative strength: added norm / residual norm)", generations),
            ("Layer sweep", sweep),
        ],
    )


def projection_figure(projection: dict[str, list[float]], layer: int) -> go.Figure:
    figure = go.Figure()
    for name, values in projection.items():
        figure.add_scatter(x=list(range(len(values))), y=values, mode="lines+markers", name=name)
    figure.add_vline(x=layer, line_dash="dot", annotation_text="steered layer")
    figure.update_layout(
        title="Cosine of the last-token residual with the sentiment direction, per layer",
        xaxis_title="layer (resid_post)",
        yaxis_title="cosine",
    )
    return figure
