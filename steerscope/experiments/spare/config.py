"""spare's settings: the config, its layer sets, and the directions and conditions every phase names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

from steerscope.errors import InputError
from steerscope.registry import ExperimentConfig
from steerscope.settings import Count, Layer, NonEmpty, Range
from steerscope.steering.experiment_saes import SAESettings

DIRECTIONS = ("context", "memory")
CONDITIONS = (
    "no_edit",
    "spare_to_context",
    "spare_to_memory",
    "random_features_to_context",
    "random_features_to_memory",
    "diffmean_to_context",
    "diffmean_to_memory",
)
# the control-respecting rule's choices (`control_rule`), held out beside the authors' rule
CONTROLLED_CONDITIONS = (
    "spare_controlled_to_context",
    "spare_controlled_to_memory",
    "random_features_controlled_to_context",
    "random_features_controlled_to_memory",
)


def reported_conditions(results: dict[str, Any]) -> list[str]:
    """The held-out conditions a results dict holds, in report order."""
    return [name for name in CONDITIONS + CONTROLLED_CONDITIONS if name in results]


@dataclass
class SpareConfig(SAESettings, ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(
        n_candidates=120, ps=[0.03, 0.07, 0.2], alphas=[1.0, 2.0, 3.0], layer_set_sizes=[1, 2]
    )
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_candidates": (("conflicts", ""),)}
    n_candidates: Count | None = None  # None: every candidate fact of the conflict data
    demos: Annotated[int, Range(0)] = 3
    # of the memorised facts, touched once by the chosen settings
    held_out: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    # of the other facts, for choosing settings; the rest fit features
    dev: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.35
    peak_layer: Layer | None = None  # None: n_layers // 2 (9 on Gemma 3 270M, the conflict-probe peak)
    # consecutive layers around the peak, one set per size
    layer_set_sizes: Annotated[list[Count], NonEmpty()] = field(default_factory=lambda: [1, 2, 4])
    # explicit sets instead of peak_layer / layer_set_sizes
    layer_sets: Annotated[list[Annotated[list[Layer], NonEmpty()]], NonEmpty()] | None = None
    # cumulative-MI share
    ps: Annotated[list[Annotated[float, Range(0, 1, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.01, 0.03, 0.07, 0.2, 0.5]
    )
    # target scale
    alphas: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 5.0]
    )
    # difference-of-means strengths
    strengths: Annotated[list[Annotated[float, Range(0, low_open=True)]], NonEmpty()] = field(
        default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0]
    )
    balance: bool = False  # cut the larger behaviour group before MI (the authors' option)
    # run the random-feature control at every SpARE dev setting too (doubles SpARE's dev grid), so
    # the grid shows whether any setting moves answers more than as many random features do
    dev_random_control: bool = True
    # also choose, per direction, the best dev setting among those whose random-feature control
    # moves neither exact-match rate by 0.05 or more, and run it held out beside the authors' rule
    # (which takes the best dev score whatever its control does); needs dev_random_control
    control_rule: bool = True

    def __post_init__(self) -> None:
        if self.control_rule and not self.dev_random_control:  # the runner names the experiment
            raise InputError(
                "control_rule=true needs dev_random_control=true (the rule reads each dev "
                "setting's random control); set control_rule=false or dev_random_control=true"
            )


def layer_sets(config: SpareConfig, n_layers: int) -> list[list[int]]:
    """The candidate layer sets: `layer_sets`, or for each size in `layer_set_sizes` that many
    consecutive layers from size // 2 below the peak (1: [9], 2: [8, 9], 4: [7, 8, 9, 10] on
    Gemma 3 270M; the authors edit 4 consecutive middle layers), shifted to fit the model."""
    if config.layer_sets is not None:
        sets = [sorted(set(s)) for s in config.layer_sets]
    else:
        peak = n_layers // 2 if config.peak_layer is None else config.peak_layer
        sets = []
        for size in config.layer_set_sizes:
            if size > n_layers:
                raise InputError(f"spare: a set of {size} layers does not fit a model of {n_layers}")
            start = min(max(0, peak - size // 2), n_layers - size)
            sets.append(list(range(start, start + size)))
    bad = [s for s in sets if not s or not all(0 <= layer < n_layers for layer in s)]
    if bad or not sets:
        raise InputError(f"spare: layer sets {sets} must be non-empty and in 0..{n_layers - 1}")
    return [list(s) for s in dict.fromkeys(tuple(s) for s in sets)]
