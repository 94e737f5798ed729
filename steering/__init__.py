"""What changes behaviour at inference time: steering vectors, their construction and application."""

from steerscope.steering.apply import steer, steering_edit
from steerscope.steering.build import diff_of_means, example_activations, pca_of_differences, sweep_layers
from steerscope.steering.vector import Fingerprint, SteeringVector

__all__ = [
    "Fingerprint",
    "SteeringVector",
    "diff_of_means",
    "example_activations",
    "pca_of_differences",
    "steer",
    "steering_edit",
    "sweep_layers",
]
