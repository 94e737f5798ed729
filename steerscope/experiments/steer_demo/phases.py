"""steer-demo's phases: split the pairs, sweep the layers and fit the vector, generate at each
strength, and project every layer's activations on the direction."""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from steerscope.capture import tokenize_for_generate
from steerscope.context import ExperimentContext
from steerscope.data.records import ContrastPair
from steerscope.experiments.steer_demo.config import SteerDemoConfig
from steerscope.model import ModelLike
from steerscope.sites import Site
from steerscope.steering.apply import steer
from steerscope.steering.build import Example, diff_of_means, example_activations, sweep_layers
from steerscope.steering.vector import SteeringVector


def examples(pairs: list[ContrastPair]) -> tuple[list[Example], list[Example], str]:
    """(positive, negative, reduce): prompts read at the last token, or (prompt, completion)
    pairs read over the completion's tokens."""
    if pairs and pairs[0].completion is not None:
        return (
            [(p.positive, p.completion) for p in pairs],
            [(p.negative, p.completion) for p in pairs],
            "completion_mean",
        )
    return [p.positive for p in pairs], [p.negative for p in pairs], "last"


@dataclass
class Pairs:
    """The training and held-out pairs as the vector reads them, and the neutral prompts."""

    train: list[ContrastPair]
    heldout: list[ContrastPair]
    positive: list[Example]
    negative: list[Example]
    held_pos: list[Example]
    held_neg: list[Example]
    reduce: str
    neutral: list[str]


def select_pairs(config: SteerDemoConfig, context: ExperimentContext) -> Pairs:
    """The training and held-out pairs of the context's data, and the prompts to generate from."""
    data = context.data.need("pairs")
    train, heldout = data.pairs(config.n_train, config.n_heldout, config.seed)
    context.used("pairs", train=len(train), heldout=len(heldout))
    positive, negative, reduce = examples(train)
    held_pos, held_neg, _ = examples(heldout)
    neutral = list(config.prompts or data.prompts)
    return Pairs(train, heldout, positive, negative, held_pos, held_neg, reduce, neutral)


def fit_vector(
    config: SteerDemoConfig, context: ExperimentContext, pairs: Pairs
) -> tuple[list[dict], int, SteeringVector]:
    """The held-out layer sweep and the difference-of-means vector at `layer` (default: the best
    held-out separation, last layer excluded)."""
    model, data = context.model, context.data.need("pairs")
    positive, negative, reduce = pairs.positive, pairs.negative, pairs.reduce
    sweep = sweep_layers(model, (positive, negative), (pairs.held_pos, pairs.held_neg), reduce=reduce)
    layer = config.layer
    if layer is None:
        layer = max(sweep[:-1], key=lambda s: s["separation"])["layer"]
    vector = diff_of_means(
        model,
        positive,
        negative,
        Site(layer, "resid_post"),
        reduce,
        description=f"{data.source}: positive minus negative",
    )
    return sweep, layer, vector


def generate_at_strengths(
    config: SteerDemoConfig, model: ModelLike, vector: SteeringVector, neutral: list[str]
) -> list[dict]:
    """Greedy continuations of the neutral prompts at every strength."""
    batch = tokenize_for_generate(model, neutral)
    n_prompt = batch["input_ids"].shape[1]
    generations = []
    for strength in tqdm(config.strengths, desc="generations at each strength"):
        with steer(model, vector, strength=strength):
            out = model.generate(**batch, max_new_tokens=config.max_new_tokens, do_sample=False)
        for prompt, row in zip(neutral, out, strict=True):
            text = model.tokenizer.decode(row[n_prompt:], skip_special_tokens=True)
            generations.append({"strength": strength, "prompt": prompt, "continuation": text})
    return generations


def project_per_layer(
    model: ModelLike, vector: SteeringVector, layer: int, pairs: Pairs
) -> dict[str, list[float]]:
    """Per group (held-out positive and negative, neutral prompts), the mean cosine of every
    layer's residual with the direction."""
    direction = vector.directions[str(Site(layer, "resid_post"))]
    unit = direction / direction.norm()
    sites = [Site(i, "resid_post") for i in range(model.anatomy.n_layers)]
    groups = {
        "positive (held out)": (pairs.held_pos, pairs.reduce),
        "negative (held out)": (pairs.held_neg, pairs.reduce),
        "neutral prompts": (pairs.neutral, "last"),
    }
    projection = {}
    for name, (group, how) in tqdm(groups.items(), desc="projections per layer"):
        acts = example_activations(model, group, sites, how)
        projection[name] = [
            (acts[str(s)] @ unit / acts[str(s)].norm(dim=-1)).mean().item() for s in sites
        ]  # cosine with the direction, so layers of different norm compare
    return projection
