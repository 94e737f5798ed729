"""What changes behaviour at inference time (steerscope.steering): steering vectors, their
construction and application, SAEs and SpARE, efficiency steering, and their figures.

Efficiency steering imports transformers' generation utilities (about a second), so its names
(`efficiency`: harvest and vector; `layer_choice`: evaluation and the layer to steer) load on
first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerscope.lazy import lazy_exports
from steerscope.steering.apply import steer, steering_edit
from steerscope.steering.bank import SteeringBank, install_steering_bank
from steerscope.steering.build import diff_of_means, example_activations, pca_of_differences, sweep_layers
from steerscope.steering.control_vector import mean_residual_norms
from steerscope.steering.plots import frontier_figure, layer_sweep_figure, projection_figure
from steerscope.steering.sae import (
    SAETrainSettings,
    last_token_codes,
    load_sae,
    saes_by_site,
    train_saes,
    training_texts,
)
from steerscope.steering.spare import select_features, spare_edits
from steerscope.steering.vector import Fingerprint, SteeringVector

if TYPE_CHECKING:
    from steerscope.steering.efficiency import efficiency_vector, harvest_prompt_contrast, harvest_sampled
    from steerscope.steering.layer_choice import (
        best_layer,
        evaluate,
        evaluate_settings,
        spread_layers,
        steering_effects,
    )
    from steerscope.steering.thinking import think_close_id

_LAZY = {
    "steerscope.steering.efficiency": ("efficiency_vector", "harvest_prompt_contrast", "harvest_sampled"),
    "steerscope.steering.layer_choice": (
        "best_layer",
        "evaluate",
        "evaluate_settings",
        "spread_layers",
        "steering_effects",
    ),
    "steerscope.steering.thinking": ("think_close_id",),
}
__getattr__, __dir__ = lazy_exports(
    __name__, {name: module for module, names in _LAZY.items() for name in names}
)

__all__ = [
    "Fingerprint",
    "SAETrainSettings",
    "SteeringBank",
    "SteeringVector",
    "best_layer",
    "diff_of_means",
    "efficiency_vector",
    "evaluate",
    "evaluate_settings",
    "example_activations",
    "frontier_figure",
    "harvest_prompt_contrast",
    "harvest_sampled",
    "install_steering_bank",
    "last_token_codes",
    "layer_sweep_figure",
    "load_sae",
    "mean_residual_norms",
    "pca_of_differences",
    "projection_figure",
    "saes_by_site",
    "select_features",
    "spare_edits",
    "spread_layers",
    "steer",
    "steering_edit",
    "steering_effects",
    "sweep_layers",
    "think_close_id",
    "train_saes",
    "training_texts",
]
