"""Where a trained organism comes from: its committed weights (verified), or a build from its recipe
into the steerscope cache (resuming an interrupted one) when the recipe has no committed build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from steerscope.cache import cached_folder, is_intact
from steerscope.organisms import REPORT, OrganismSpec, organism_spec
from steerscope.organisms.committed import verified_weights


def work_folder(spec: OrganismSpec) -> Path:
    """Where the checkpoints of a build in progress live (kept across a kill, removed when done)."""
    folder = spec.folder()
    return folder.with_name(folder.name + ".work")


def recipe_build(spec: OrganismSpec, progress: bool = True) -> tuple[Path, bool]:
    """The build of `spec` from its recipe in the cache, trained now if missing; and whether it was."""
    from steerscope.organisms.train import train_organism

    work = work_folder(spec)

    def build(tmp: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        start = organism_folder(spec.planted.start_from, progress) if spec.planted is not None else None
        train_organism(spec, tmp, work, progress, start)

    folder, built = cached_folder(spec.folder(), build)
    if built:
        shutil.rmtree(work, ignore_errors=True)
    return folder, built


def organism_folder(name: str, progress: bool = True) -> Path:
    """The folder of organism `name` (HF format with its tokenizer): its committed weights once
    verified, else (a recipe with no committed build) its cache build, trained now if missing."""
    spec = organism_spec(name)
    return verified_weights(spec) or recipe_build(spec, progress)[0]


def ready_folder(name: str) -> Path | None:
    """The verified folder of organism `name` if it needs no training, else None."""
    spec = organism_spec(name)
    folder = verified_weights(spec)
    if folder is None and is_intact(spec.folder()):
        folder = spec.folder()
    return folder


def training_report(name: str) -> dict[str, Any]:
    """What the build of organism `name` recorded (steps, seconds, losses per 50 steps, sizes)."""
    return json.loads((organism_folder(name) / REPORT).read_text())
