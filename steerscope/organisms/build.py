"""Build an organism into the steerscope cache on first use, resuming an interrupted build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from steerscope.cache import cached_folder
from steerscope.organisms import REPORT, OrganismSpec, organism_spec


def work_folder(spec: OrganismSpec) -> Path:
    """Where the checkpoints of a build in progress live (kept across a kill, removed when done)."""
    folder = spec.folder()
    return folder.with_name(folder.name + ".work")


def organism_folder(name: str, progress: bool = True) -> Path:
    """The cached folder of organism `name` (HF format with its tokenizer), trained now if missing."""
    from steerscope.organisms.train import train_organism

    spec = organism_spec(name)
    work = work_folder(spec)

    def build(tmp: Path) -> None:
        work.mkdir(parents=True, exist_ok=True)
        train_organism(spec, tmp, work, progress)

    folder, built = cached_folder(spec.folder(), build)
    if built:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def training_report(name: str) -> dict[str, Any]:
    """What the build of organism `name` recorded (steps, seconds, losses per 50 steps, sizes);
    trains it first if it is not cached."""
    return json.loads((organism_folder(name) / REPORT).read_text())
