"""`steer-demo`: build a steering vector from contrast pairs (by default the project's sentiment
set; `--data pairs=FILE` for a user's), pick the layer on held-out pairs, show generations at
several strengths and the projection per layer. Pairs with a completion are read over the
completion's tokens after each prompt, pairs without at the last prompt token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from tqdm.auto import tqdm

from steerscope.capture import tokenize_for_generate
from steerscope.context import ExperimentContext
from steerscope.data.records import ContrastPair
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.report import quoted
from steerscope.settings import Count, Layer, NewTokens, NonEmpty
from steerscope.sites import Site
from steerscope.steering.apply import steer
from steerscope.steering.build import Example, diff_of_means, example_activations, sweep_layers
from steerscope.steering.plots import layer_sweep_figure, projection_figure


@dataclass
class SteerDemoConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_train=16, n_heldout=8, max_new_tokens=12)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {
        "n_train": (("pairs", "train"),),
        "n_heldout": (("pairs", "heldout"),),
    }
    n_train: Count = 32
    n_heldout: Count = 16
    strengths: Annotated[list[float], NonEmpty()] = field(
        default_factory=lambda: [-0.25, -0.1, 0.0, 0.1, 0.25]
    )
    max_new_tokens: NewTokens = 20
    layer: Layer | None = None  # default: the best held-out separation, last layer excluded
    # prompts to generate from; default: the data's neutral prompts
    prompts: Annotated[list[str], NonEmpty()] | None = None


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


@register(
    "steer-demo",
    SteerDemoConfig,
    "steering vector from contrast pairs (default: sentiment): layer sweep, generations, projections",
    data=("pairs",),
)
def run(config: SteerDemoConfig, context: ExperimentContext) -> Outcome:
    model, data = context.model, context.data.need("pairs")
    n_layers = model.anatomy.n_layers
    train, heldout = data.pairs(config.n_train, config.n_heldout, config.seed)
    context.used("pairs", train=len(train), heldout=len(heldout))
    positive, negative, reduce = examples(train)
    held_pos, held_neg, _ = examples(heldout)
    neutral = list(config.prompts or data.prompts)

    sweep = sweep_layers(model, (positive, negative), (held_pos, held_neg), reduce=reduce)
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

    batch = tokenize_for_generate(model, neutral)
    n_prompt = batch["input_ids"].shape[1]
    generations = []
    for strength in tqdm(config.strengths, desc="generations at each strength"):
        with steer(model, vector, strength=strength):
            out = model.generate(**batch, max_new_tokens=config.max_new_tokens, do_sample=False)
        for prompt, row in zip(neutral, out, strict=True):
            text = model.tokenizer.decode(row[n_prompt:], skip_special_tokens=True)
            generations.append({"strength": strength, "prompt": prompt, "continuation": text})

    direction = vector.directions[str(Site(layer, "resid_post"))]
    unit = direction / direction.norm()
    sites = [Site(i, "resid_post") for i in range(n_layers)]
    groups = {
        "positive (held out)": (held_pos, reduce),
        "negative (held out)": (held_neg, reduce),
        "neutral prompts": (neutral, "last"),
    }
    projection = {}
    for name, (group, how) in tqdm(groups.items(), desc="projections per layer"):
        acts = example_activations(model, group, sites, how)
        projection[name] = [
            (acts[str(s)] @ unit / acts[str(s)].norm(dim=-1)).mean().item() for s in sites
        ]  # cosine with the direction, so layers of different norm compare

    figures = [projection_figure(projection, layer), layer_sweep_figure(sweep, layer)]
    results = {
        "model": model.source,
        "layer": layer,
        "n_train": len(train),
        "layer_sweep": sweep,
        "generations": generations,
        "projection_per_layer": projection,
        "direction_norm": direction.norm().item(),
    }
    return Outcome(
        results=results,
        summary=summary_text(results),
        figures=figures,
        tables=[
            ("Generations (relative strength: added norm / residual norm)", generations),
            ("Layer sweep", sweep),
        ],
    )


def summary_text(results: dict[str, Any]) -> str:
    """The vector's layer and held-out separation, and the first prompt's continuation at each strength."""
    at = next(row for row in results["layer_sweep"] if row["layer"] == results["layer"])
    first = results["generations"][0]["prompt"]
    return "\n".join(
        [
            f"{results['model']}: vector at L{results['layer']}.resid_post from {results['n_train']} pairs "
            f"(difference of means); on held-out pairs its projection's sign is right for "
            f"{at['accuracy']:.0%}, separation {at['separation']:.2f}",
            f"{quoted(first)} continued at relative strength:",
            *(
                f"  {g['strength']:+.2f}: {quoted(g['continuation'])}"
                for g in results["generations"]
                if g["prompt"] == first
            ),
        ]
    )
