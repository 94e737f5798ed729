"""conflict-probe's settings (the SAE-feature probe's apply only with `sae_probe=True`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from steerscope.errors import InputError
from steerscope.probes.sparse_probe import Selection
from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, Layer, NonEmpty, Range
from steerscope.steering.experiment_saes import SAESettings


@dataclass
class ConflictProbeConfig(SAESettings, ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_candidates=80, restarts=2)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_candidates": (("conflicts", ""),)}
    n_candidates: Count | None = None  # facts tried closed-book (None: all the data offers)
    # candidates: the data's (an organism's were never asked with a context in training); trained:
    # an organism's facts asked with contexts in training, where a planted mechanism exists
    facts: Literal["candidates", "trained"] = "candidates"
    demos: Annotated[int, Range(0)] = 3
    held_out: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    restarts: Count = 3
    # a sparse probe on SAE codes beside the dense residual probe (trains the SAEs the cache lacks)
    sae_probe: bool = False
    # layers of the SAE probe (resid_post); None: the four middle layers spare edits (7-10 on Gemma 3 270M)
    sae_layers: Annotated[list[Layer], NonEmpty()] | None = None
    sae_probe_k: Count = 8  # at most this many SAE features per probe
    sae_probe_selection: Selection = "l1"  # L1 logistic path, or top-k mutual information
    sae_top_prompts: Count = 3  # top-activating prompts shown per feature

    def __post_init__(self) -> None:
        changed = [
            f.name
            for f in dataclasses.fields(self)
            if f.name.startswith("sae_") and getattr(self, f.name) != f.default
        ]
        if changed and not self.sae_probe:  # the runner names the experiment
            raise InputError(
                f"{', '.join(changed)} {'applies' if len(changed) == 1 else 'apply'} only with "
                "sae_probe=True (the SAE-feature probe is off)"
            )
