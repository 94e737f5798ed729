"""`smoke`: load a model, capture residual norms per layer, and steer one generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import torch

from steerscope.capture import capture, tokenize_for_generate
from steerscope.context import ExperimentContext
from steerscope.intervene import intervene
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.report import quoted
from steerscope.settings import Layer, NewTokens
from steerscope.sites import Site

PROMPTS = ["The capital of France is", "Sally puts the ball in the basket."]


@dataclass
class SmokeConfig(ExperimentConfig):
    layer: Layer | None = None  # steered layer; default: the middle layer
    relative_strength: float = 0.5  # added vector norm / residual norm at the site
    max_new_tokens: NewTokens = 12


@register("smoke", SmokeConfig, "load, capture residual norms per layer, steer one generation")
def run(config: SmokeConfig, context: ExperimentContext) -> Outcome:
    model = context.model
    anatomy = model.anatomy
    layer = anatomy.n_layers // 2 if config.layer is None else config.layer
    sites = [Site(i, "resid_post") for i in range(anatomy.n_layers)]
    acts = capture(model, PROMPTS, sites, reduce="mean", progress=False)
    norms = [acts[s].norm(dim=-1).mean().item() for s in sites]

    generator = torch.Generator().manual_seed(config.seed)
    direction = torch.randn(anatomy.d_model, generator=generator)
    direction = direction / direction.norm()

    def add_direction(act: torch.Tensor, tokens) -> torch.Tensor:
        scale = config.relative_strength * act.norm(dim=-1, keepdim=True)
        return act + scale * direction.to(act) * tokens.is_real[..., None]

    batch = tokenize_for_generate(model, PROMPTS[:1])
    plain = model.generate(**batch, max_new_tokens=config.max_new_tokens, do_sample=False)
    with intervene(model, {Site(layer, "resid_post"): add_direction}):
        steered = model.generate(**batch, max_new_tokens=config.max_new_tokens, do_sample=False)
    n_prompt = batch["input_ids"].shape[1]
    texts = {
        "plain": model.tokenizer.decode(plain[0, n_prompt:], skip_special_tokens=True),
        "steered": model.tokenizer.decode(steered[0, n_prompt:], skip_special_tokens=True),
    }
    figure = go.Figure(go.Scatter(x=list(range(anatomy.n_layers)), y=norms, mode="lines+markers"))
    figure.update_layout(title="Mean residual norm after each layer", xaxis_title="layer", yaxis_title="norm")
    results = {
        "model": model.source,
        "anatomy": {
            "n_layers": anatomy.n_layers,
            "d_model": anatomy.d_model,
            "rope_bases": anatomy.rope_bases,
        },
        "resid_norm_per_layer": norms,
        "prompt": PROMPTS[0],
        "steered_at": {"layer": layer, "relative_strength": config.relative_strength},
        "generations": texts,
    }
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=[figure],
        tables=[("Generations", [{"mode": k, "text": v} for k, v in texts.items()])],
    )


def summary_text(results: dict[str, Any]) -> str:
    """The model's size, how the residual norm grows, and the plain and steered continuations."""
    anatomy, norms, steered = results["anatomy"], results["resid_norm_per_layer"], results["steered_at"]
    return "\n".join(
        [
            f"{results['model']}: {anatomy['n_layers']} layers, d_model {anatomy['d_model']}; mean residual "
            f"norm {norms[0]:.3g} after layer 0, {norms[-1]:.3g} after the last",
            f"prompt:  {quoted(results['prompt'])}",
            f"plain:   {quoted(results['generations']['plain'])}",
            f"steered: {quoted(results['generations']['steered'])} (a random direction at "
            f"L{steered['layer']}.resid_post, {steered['relative_strength']:g} x the residual norm)",
        ]
    )
