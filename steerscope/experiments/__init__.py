"""The experiments, one module each. Every module registers itself (`steerscope.registry`) and the
runner finds them without a list (`steerscope.runner.discover_experiments`); no experiment
imports another: what two share lives in `steerscope.probes` or `steerscope.steering`."""

from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.runner import get_experiment, run_experiment

__all__ = ["ExperimentConfig", "Outcome", "get_experiment", "register", "run_experiment"]
