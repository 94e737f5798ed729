"""smoke's phases: read the residual norm after every layer, then generate plain and steered."""

from __future__ import annotations

import torch

from steerscope.capture import capture, tokenize_for_generate
from steerscope.experiments.smoke.config import PROMPTS, SmokeConfig
from steerscope.intervene import intervene
from steerscope.model import ModelLike
from steerscope.sites import Site


def residual_norms(model: ModelLike) -> list[float]:
    """The mean residual norm after each layer over the prompts."""
    sites = [Site(i, "resid_post") for i in range(model.anatomy.n_layers)]
    acts = capture(model, PROMPTS, sites, reduce="mean", progress=False)
    return [acts[s].norm(dim=-1).mean().item() for s in sites]


def steered_generation(config: SmokeConfig, model: ModelLike) -> tuple[int, dict[str, str]]:
    """The steered layer and the first prompt's greedy continuation, plain and with a random
    direction added at `relative_strength` x the residual norm."""
    anatomy = model.anatomy
    layer = anatomy.n_layers // 2 if config.layer is None else config.layer
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
    return layer, texts
