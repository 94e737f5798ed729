"""steerscope: a mechanistic-interpretability and inference-time steering workbench.

The four core pieces load with the package: `load`, `Site`, `capture`, `intervene` (and
`perturb`, their parameter-space twin). Steering, experiments, data and organisms load on first
use, so `import steerscope` costs little more than `import torch`:

    import steerscope as ss
    model = ss.load()
    acts = ss.capture(model, ["The capital of France is"], ["L9.resid_post"])
    with ss.steer(model, vector, strength=0.1):
        model.generate(**ss.tokenize_for_generate(model, prompts), max_new_tokens=20)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from steerscope.anatomy import Anatomy
from steerscope.capture import Capture, capture, tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.intervene import ignores_tokens, intervene
from steerscope.lazy import lazy_exports
from steerscope.loading import load
from steerscope.model import Model, ModelLike
from steerscope.perturb import perturb
from steerscope.sites import Site
from steerscope.tokens import TokenInfo

if TYPE_CHECKING:
    from steerscope.data.facts import split_facts
    from steerscope.data.suite import DataSuite
    from steerscope.data.user_data import read_user_data
    from steerscope.organisms import suite_for
    from steerscope.organisms.build import organism_folder, training_report
    from steerscope.runner import discover_experiments, run_experiment
    from steerscope.steering.apply import steer
    from steerscope.steering.vector import SteeringVector
    from steerscope.tiny import tiny_model

_LAZY = {
    "DataSuite": "steerscope.data.suite",
    "SteeringVector": "steerscope.steering.vector",
    "discover_experiments": "steerscope.runner",
    "organism_folder": "steerscope.organisms.build",
    "read_user_data": "steerscope.data.user_data",
    "run_experiment": "steerscope.runner",
    "steer": "steerscope.steering.apply",
    "split_facts": "steerscope.data.facts",
    "suite_for": "steerscope.organisms",
    "tiny_model": "steerscope.tiny",
    "training_report": "steerscope.organisms.build",
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "Anatomy",
    "Capture",
    "DataSuite",
    "InputError",
    "Model",
    "ModelLike",
    "Site",
    "SteeringVector",
    "TokenInfo",
    "capture",
    "discover_experiments",
    "ignores_tokens",
    "intervene",
    "load",
    "organism_folder",
    "perturb",
    "read_user_data",
    "run_experiment",
    "split_facts",
    "steer",
    "suite_for",
    "tiny_model",
    "tokenize",
    "tokenize_for_generate",
    "training_report",
]
