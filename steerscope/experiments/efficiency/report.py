"""What efficiency writes on a model that does not think in tags: the results, the summary, the
frontier and layer figures, the sweep, generations and harvest tables."""

from __future__ import annotations

from typing import Any

from steerscope.experiments.efficiency.config import EfficiencyConfig
from steerscope.model import ModelLike
from steerscope.registry import Outcome
from steerscope.steering.efficiency import Harvest
from steerscope.steering.generation import Generation
from steerscope.steering.plots import frontier_figure, layer_sweep_figure
from steerscope.steering.vector import SteeringVector


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


def outcome(
    config: EfficiencyConfig,
    model: ModelLike,
    problems: tuple[list, list],
    harvested: tuple[Harvest, list[dict]],
    layer_choice: tuple[int, list[dict[str, Any]], Any],
    vector: SteeringVector,
    sweep: dict[str, Any],
    shown: dict[str, list[Generation]],
) -> Outcome:
    """The results (harvest, layer choice, held-out sweep, generations) with summary, figures, tables."""
    (train, heldout), (harvest, attempts), (layer, effects, layer_scores) = problems, harvested, layer_choice
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
