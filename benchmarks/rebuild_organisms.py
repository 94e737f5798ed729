"""Rebuild model organisms from their recipes and check the bytes equal the committed weights.

The slow check behind `steerscope/organisms/trained-weights/` (the suite only verifies the committed files
and the first steps of each recipe): each organism is trained from scratch into an empty
scratch cache, as `steerscope build organism:NAME --from-recipe` does, and the files its recipe
decides (`MODEL_FILES`: weights, config, tokenizer) are compared byte for byte with the committed
ones. Prints JSON: per organism the build's wall time, its steps, whether the bytes are equal and
which files differ. Builds take 5-15 minutes each on 2 idle cores; on a loaded machine
`OMP_WAIT_POLICY=PASSIVE` keeps the training threads from spinning (same bytes, far less time).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/rebuild_organisms.py [NAME ...] [--json F]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from interleaved import finish

from steerscope.organisms import ORGANISMS
from steerscope.organisms.build import recipe_build
from steerscope.organisms.committed import differing_files


def rebuild(name: str) -> dict:
    """Train organism `name` from its recipe in a scratch cache; its time and byte equality."""
    spec = ORGANISMS[name]
    scratch = Path(tempfile.mkdtemp(prefix=f"rebuild-{name}-"))
    os.environ["STEERSCOPE_CACHE"] = str(scratch)
    try:
        start = time.perf_counter()
        folder, trained = recipe_build(spec)
        seconds = time.perf_counter() - start
        assert trained, f"{folder} was not built from scratch"
        differing = differing_files(spec, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "seconds": round(seconds, 1),
        "steps": spec.training.steps,
        "bytes_equal": not differing,
        "differing_files": differing,
        "load_average_1min_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(ORGANISMS), help="organisms (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(ORGANISMS))
    if unknown:
        parser.error(f"unknown organisms {', '.join(unknown)}; known: {', '.join(ORGANISMS)}")
    load_at_start = os.getloadavg()[0]
    results = {name: rebuild(name) for name in args.names}
    finish(
        {"organisms": results, "all_bytes_equal": all(r["bytes_equal"] for r in results.values())},
        args.json,
        load_at_start,
    )


if __name__ == "__main__":
    main()
