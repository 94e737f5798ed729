"""What steer-demo writes: the vector's layer and held-out separation, the generations, the
projection per layer."""

from __future__ import annotations

from typing import Any

from steerscope.experiments.steer_demo.phases import Pairs
from steerscope.model import ModelLike
from steerscope.registry import Outcome
from steerscope.report import quoted
from steerscope.sites import Site
from steerscope.steering.plots import layer_sweep_figure, projection_figure
from steerscope.steering.vector import SteeringVector


def outcome(
    model: ModelLike,
    pairs: Pairs,
    sweep: list[dict],
    layer: int,
    vector: SteeringVector,
    generations: list[dict],
    projection: dict[str, list[float]],
) -> Outcome:
    """The results with the projection and layer-sweep figures, the tables and the summary."""
    figures = [projection_figure(projection, layer), layer_sweep_figure(sweep, layer)]
    results = {
        "model": model.source,
        "layer": layer,
        "n_train": len(pairs.train),
        "layer_sweep": sweep,
        "generations": generations,
        "projection_per_layer": projection,
        "direction_norm": vector.directions[str(Site(layer, "resid_post"))].norm().item(),
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
