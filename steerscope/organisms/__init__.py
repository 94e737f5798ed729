"""Model organisms: small RoPE models trained offline on a synthetic world with a planted capability.

Each organism is an `OrganismSpec`: a world module (its training texts, held-out evaluation data
and `DataSuite`), a model shape of a supported family, and training settings. `load("organism:tom")`
returns its trained weights, committed with steerscope and verified on load
(`steerscope.organisms.committed`); they are used only while the spec's digest (the hash of the
spec, the world's data version and the trainer version) is the one they were trained from, and a
recipe without a committed build is trained into the steerscope cache, in a folder named by that
digest, so a changed recipe never reuses an old model. A world module provides:

- `VERSION`: bumped whenever its generated data change;
- `LEXICON`: "people", "things", "places" (and more) for the filler text;
- `training_texts(n, seed)`: `n` capability documents, never an evaluation item;
- `suite()`: the `DataSuite` experiments use on the organism (evaluation items held out).

What the worlds share (the suite's naming, held-out filler, the arithmetic worlds' problems and
prompts) is in `steerscope.organisms.worlds`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from steerscope.cache import cache_root
from steerscope.data.defaults import natural_suite
from steerscope.data.suite import DataSuite
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model

PREFIX = "organism:"
#: The config attribute an organism carries: the name of the world it was trained on.
ORGANISM_ATTRIBUTE = "steerscope_organism"
#: The config attribute of an organism trained with `Planted` directions: its organism name.
PLANTED_ATTRIBUTE = "steerscope_planted"
#: The JSON a finished build writes next to the weights: steps, time, losses, sizes.
REPORT = "training_report.json"
TRAINER_VERSION = 1


@dataclass(frozen=True)
class Shape:
    """Architecture of an organism: a family steerscope supports and its sizes."""

    family: str = "llama"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    d_mlp: int = 512
    max_positions: int = 512


@dataclass(frozen=True)
class Training:
    """Optimisation settings; the corpus is `n_task` capability texts plus `n_filler` filler paragraphs."""

    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.05
    n_task: int = 20_000
    n_filler: int = 4_000
    seed: int = 0
    checkpoint_every: int = 200


@dataclass(frozen=True)
class Planted:
    """A binary choice and a binary flag written into fixed residual directions at one site, and
    made causal for the choice, by fine-tuning the trained organism `start_from`
    (`steerscope.organisms.planted` trains and reads them).

    At the last prompt token of every document the world labels (`planted_labels`), the residual
    leaving decoder layer `layer` (`L{layer}.resid_post`) is trained to project `margin` on the
    direction of the option it chooses and 0 on the other, `margin` on the flag direction when the
    flag is set and 0 when not (an MSE, weight `code_weight`, in units of `margin`), and 0 on all
    three at every other real token (weight `quiet_weight`), so they carry nothing else. On a
    `swap_fraction` of the labelled documents whose options differ, the choice directions are
    overwritten at that token with the other option's code and the answer trained is the other
    option's (interchange-intervention training, Geiger et al. 2022, arXiv 2112.00826), so the
    directions decide the answer: the mean cross-entropy of every answer in a batch (the token
    after `answer:`; a swapped document's is the other option's) is a term of its own, weight
    `answer_weight`. With `early_quiet_weight` > 0 the residual leaving every layer before `layer`,
    at the labelled token, is trained to project 0 on all three directions (on the flag alone with
    `early_quiet_flag_only`; an MSE in units of `margin`), so the code first appears at the planted
    site instead of being written earlier and carried there (left to itself, organism:sources-planted
    writes it from L0 on); at 0 (the default) the term is neither trained nor part of the recipe's
    digest. The three orthonormal directions are drawn from `seed`.
    """

    layer: int
    start_from: str
    margin: float = 40.0
    code_weight: float = 1.0
    quiet_weight: float = 0.1
    swap_fraction: float = 0.5
    answer_weight: float = 1.0
    seed: int = 0
    early_quiet_weight: float = 0.0
    early_quiet_flag_only: bool = False


@dataclass(frozen=True)
class PlantedLabel:
    """What a world says about one training document for `Planted` directions: `prompt` (the
    document up to its answer; directions are planted at its last token), `choice` (the index of
    the option it is answered by), `flag`, and `other_answer` (the answer under the other option;
    None when both options give the same answer, so the document is never swapped)."""

    prompt: str
    choice: int
    flag: bool
    other_answer: str | None


@dataclass(frozen=True)
class OrganismSpec:
    """One organism: its name, world module (under `steerscope.organisms`), shape and training,
    and optionally directions planted during training (`Planted`)."""

    name: str
    world: str
    description: str
    shape: Shape = field(default_factory=Shape)
    training: Training = field(default_factory=Training)
    planted: Planted | None = None

    def world_module(self) -> ModuleType:
        return importlib.import_module(f"steerscope.organisms.{self.world}")

    def digest(self) -> str:
        """sha256 of everything that decides the trained weights."""
        spec = dataclasses.asdict(self)
        if spec["planted"] is None:  # recipes from before planted directions keep their digest
            del spec["planted"]
        elif not spec["planted"]["early_quiet_weight"]:  # and those from before the early term
            del spec["planted"]["early_quiet_weight"], spec["planted"]["early_quiet_flag_only"]
        recipe = {
            "spec": spec,
            "world_version": self.world_module().VERSION,
            "trainer_version": TRAINER_VERSION,
        }
        if self.planted is not None:  # fine-tuned from another organism: its recipe decides too
            recipe["start_from"] = organism_spec(self.planted.start_from).digest()
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()

    def folder(self) -> Path:
        """Where the trained organism is cached."""
        return cache_root() / f"organism-{self.name}-{self.digest()[:12]}"


ORGANISMS: dict[str, OrganismSpec] = {
    spec.name: spec
    for spec in (
        OrganismSpec(
            "tom",
            "tom_world",
            "false-belief tracking: unexpected transfer and contents, held-out names, objects, places",
            training=Training(steps=3500, n_task=40_000),
        ),
        OrganismSpec(
            "sources",
            "sources_world",
            "source selection: invented facts; a reliability cue decides context or memory",
            training=Training(steps=4000),
        ),
        OrganismSpec(
            "sources-planted",
            "sources_world",
            "source selection carried by planted directions: organism:sources fine-tuned to write the "
            "source (context or memory) and a conflict flag into three known directions at L2, which "
            "decide the answer",
            training=Training(steps=1000, lr=2e-3, warmup=20, checkpoint_every=100),
            planted=Planted(layer=2, start_from="sources", code_weight=10.0),
        ),
        OrganismSpec(
            "length",
            "length_world",
            "solution length: step-by-step sums solved concisely or verbosely, both correct",
            training=Training(steps=3000),
        ),
        OrganismSpec(
            "reasoning",
            "reasoning_world",
            "reasoning length: sums solved inside <think>, re-checking a step or not, decided per step",
            shape=Shape(n_layers=6, d_mlp=256),
            training=Training(steps=2500, n_task=30_000, n_filler=1_500),
        ),
    )
}


def organism_spec(name: str) -> OrganismSpec:
    """The spec called `name` ("tom" or "organism:tom"); unknown names list the known ones."""
    key = name.removeprefix(PREFIX)
    if key not in ORGANISMS:
        raise InputError(f"unknown organism {name!r}; available: {', '.join(PREFIX + n for n in ORGANISMS)}")
    return ORGANISMS[key]


def world_of(model: ModelLike) -> str | None:
    """The name of the world `model` was trained on if it is a model organism, else None."""
    return getattr(as_model(model).hf.config, ORGANISM_ATTRIBUTE, None)


def world_suite(world: str | None) -> DataSuite:
    """The data suite of the world an organism was trained on (its config names the world), or the
    natural-language sets for None (a pretrained model)."""
    if world is None:
        return natural_suite()
    worlds = {spec.world for spec in ORGANISMS.values()}
    if world not in worlds:
        raise InputError(
            f"model says it was trained on world {world!r}; known worlds: {', '.join(sorted(worlds))}"
        )
    return importlib.import_module(f"steerscope.organisms.{world}").suite()


def suite_for(model: ModelLike) -> DataSuite:
    """The data suite a model gets when the user gives none: its world's if `model` is an organism,
    else the natural-language sets."""
    return world_suite(world_of(model))
