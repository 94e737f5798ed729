"""steerscope: a mechanistic-interpretability and inference-time steering workbench."""

from steerscope.anatomy import Anatomy
from steerscope.capture import Capture, capture
from steerscope.intervene import intervene
from steerscope.loading import load
from steerscope.model import Model
from steerscope.perturb import perturb
from steerscope.sites import Site
from steerscope.tokens import TokenInfo

__all__ = ["Anatomy", "Capture", "Model", "Site", "TokenInfo", "capture", "intervene", "load", "perturb"]
