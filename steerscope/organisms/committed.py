"""The trained organisms committed with steerscope, so that no clone or install ever trains one.

Building an organism from its recipe takes 5 to 40 minutes on 2 cores, and a recipe fast enough
to run on first use would change every organism result in docs/results.md, so the trained
weights are part of the package: `steerscope/organisms/trained-weights/<name>/` holds the files a build
writes (fp32 safetensors as trained, config, tokenizer, training report), `recipe.json` (the
`OrganismSpec.digest()` they were trained from and the fingerprint of the recipe's first steps)
and a manifest of every file's size and hash in the cache's format (`steerscope.cache`).

The weights are used only when every byte matches the manifest and the manifest's recipe is the
spec's current one. A changed recipe makes them stale: loading then trains from the recipe into the
cache (with a warning) and the test suite fails until the new build is committed
(`steerscope build organism:NAME --from-recipe --commit`). The builds are deterministic (seeded
batches, `TRAIN_THREADS` threads), so a rebuild reproduces the committed bytes
(`benchmarks/rebuild_organisms.py` checks it); the fingerprint of the first `FIRST_STEPS` steps
catches a drifted recipe in seconds instead of a full rebuild.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors.torch import save as save_tensors

from steerscope.cache import build_in_place, damage
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, data_digest, file_digest
from steerscope.organisms import PREFIX, REPORT, OrganismSpec, organism_spec

# Not a Python identifier, so setuptools ships it as package data, not as a package it warns about.
WEIGHTS = Path(__file__).with_name("trained-weights")
RECIPE = "recipe.json"
#: The files of a build that its recipe decides byte for byte (the report's timings vary).
MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
FIRST_STEPS = 3


class DamagedWeights(RuntimeError):
    """Committed organism files that differ from their manifest (a broken checkout or install)."""


def committed_folder(spec: OrganismSpec) -> Path:
    """Where the committed build of `spec` lives (whether or not there is one)."""
    return WEIGHTS / spec.name


def committed_recipe(spec: OrganismSpec) -> dict[str, Any] | None:
    """The committed `recipe.json` of `spec`, or None when no build of it is committed."""
    path = committed_folder(spec) / RECIPE
    return json.loads(path.read_text()) if path.is_file() else None


def verified_weights(spec: OrganismSpec) -> Path | None:
    """The committed folder of `spec` if it holds a build of the spec's current recipe whose every
    byte matches its manifest; None (with a warning) if it was trained from another recipe, or
    when none is committed. Raises `DamagedWeights` if the files differ from their manifest."""
    recipe = committed_recipe(spec)
    if recipe is None:
        return None
    folder = committed_folder(spec)
    if recipe.get("recipe") != spec.digest():
        warnings.warn(
            f"{PREFIX}{spec.name}: the committed weights were trained from recipe "
            f"{str(recipe.get('recipe'))[:12]}, the recipe is now {spec.digest()[:12]}; training it into "
            f"the cache instead (commit the new build: steerscope build {PREFIX}{spec.name} --from-recipe --commit)",
            stacklevel=3,
        )
        return None
    problem = damage(folder)
    if problem is not None:
        raise DamagedWeights(
            f"{PREFIX}{spec.name}: the committed weights in {folder} fail verification ({problem}); "
            f"restore them (git checkout -- {folder.name}, or reinstall steerscope) or rebuild them "
            f"with `steerscope build {PREFIX}{spec.name} --from-recipe`"
        )
    return folder


def differing_files(spec: OrganismSpec, built: Path) -> list[str]:
    """The `MODEL_FILES` whose bytes in `built` differ from the committed ones (all when none are
    committed): empty when a build reproduces the committed weights exactly."""
    committed = committed_folder(spec)
    return [
        name
        for name in MODEL_FILES
        if not (committed / name).is_file() or file_digest(committed / name) != file_digest(built / name)
    ]


def recipe_fingerprint(spec: OrganismSpec) -> dict[str, Any]:
    """Hashes of what the recipe makes first: the tokenized corpus, the tokenizer, and the weights
    after its first `FIRST_STEPS` training steps (a few seconds instead of a whole build)."""
    from steerscope.organisms.train import build_corpus, model_tensors, train_steps

    corpus = build_corpus(spec)
    start = None
    if spec.planted is not None:
        start = verified_weights(organism_spec(spec.planted.start_from))
        if start is None:
            raise InputError(
                f"organism:{spec.name} starts from organism:{spec.planted.start_from}, which has no verified committed weights"
            )
    with tempfile.TemporaryDirectory() as scratch:
        model, _ = train_steps(
            spec, corpus, Path(scratch) / "work", until=FIRST_STEPS, progress=False, start=start
        )
        corpus.tokenizer.save_pretrained(Path(scratch) / "tokenizer")
        tokenizer = file_digest(Path(scratch) / "tokenizer" / "tokenizer.json")
    return {
        "steps": FIRST_STEPS,
        "corpus": data_digest(json.dumps(corpus.documents).encode()),
        "tokenizer": tokenizer,
        "weights": data_digest(save_tensors(model_tensors(model))),
    }


def commit_build(spec: OrganismSpec, built: Path) -> Path:
    """Make the build in `built` (a finished build of `spec`'s current recipe) the committed weights
    of `spec`: its files, `recipe.json` with the recipe's fingerprint, and a manifest."""
    report = json.loads((built / REPORT).read_text())
    if report.get("digest") != spec.digest():
        raise InputError(f"{built} was trained from recipe {report.get('digest')}, not {spec.digest()}")
    recipe = {
        "organism": spec.name,
        "recipe": spec.digest(),
        "hash": HASH_NAME,
        "first_steps": recipe_fingerprint(spec),
        "built_with": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
    }

    def fill(tmp: Path) -> None:
        for name in (*MODEL_FILES, REPORT):
            shutil.copyfile(built / name, tmp / name)
        (tmp / RECIPE).write_text(json.dumps(recipe, indent=1) + "\n")

    build_in_place(committed_folder(spec), fill)
    return committed_folder(spec)
