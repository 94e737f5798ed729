"""A run's output folder: where it is (`~` expanded), that steerscope may write there, and the run
id that marks `results.json` and `report.html` as one run.

A folder inside the steerscope cache is refused: a cache entry that fails verification is deleted
and rebuilt, run and all. The two files of a run are each written atomically and carry the same
run id, so a run killed between the two writes leaves files a reader can tell apart.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

from steerscope.cache import cache_root, check_writable
from steerscope.errors import InputError

RESULTS = "results.json"


def output_folder(out: str | os.PathLike) -> Path:
    """`out` as the absolute folder a run writes into (`~` expanded, symlinks resolved)."""
    return Path(out).expanduser().resolve()


def check_output_folder(out: str | os.PathLike) -> Path:
    """`out` as a folder that exists or can be created, outside the steerscope cache, in a place
    this process can write, without creating the folder yet."""
    folder = output_folder(out)
    cache = cache_root().resolve()
    if folder == cache or cache in folder.parents:
        raise InputError(
            f"output {out}: inside the steerscope cache {cache}, whose entries are deleted and rebuilt "
            "when they fail verification; choose a folder outside it"
        )
    check_writable(folder, f"output {out}")
    return folder


def new_run_id() -> str:
    """A run id, readable and unique: the UTC time and 6 random hex digits."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def previous_run(folder: Path) -> str | None:
    """What run `folder` already holds ("a smoke run (run <id>)"), or None when it holds none."""
    try:
        results = json.loads((folder / RESULTS).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict):
        return None
    return f"a {results.get('experiment', 'steerscope')} run (run {results.get('run_id', 'without an id')})"
