"""Warm load time of the embedded Gemma 3 270M, and what verifying the cache costs within it.

Each repetition runs in a fresh process (imports done before the clock starts) with the cache
already built and its files in the page cache (one untimed run first): `first_load_seconds` is
the process's first `steerscope.load()` (transformers imports its Gemma modules lazily, inside
it), `load_seconds` the faster of two more loads in the same process, `verify_seconds`
`steerscope.cache.is_intact` on the cached folder alone (the full-file hash of every file).
Medians over repetitions.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/load_time.py [--reps 5] [--json runs/load_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from interleaved import finish

_ONE_RUN = """
import json, time
import steerscope as ss
from steerscope.cache import is_intact
from steerscope.loading import embedded_cache_dir
times = []
for _ in range(3):
    start = time.perf_counter()
    ss.load()
    times.append(time.perf_counter() - start)
start = time.perf_counter()
assert is_intact(embedded_cache_dir())
print(json.dumps({"first": times[0], "load": min(times[1:]), "verify": time.perf_counter() - start}))
"""


def one_run() -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _ONE_RUN], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    one_run()  # builds the cache if needed and fills the page cache
    runs = [one_run() for _ in range(args.reps)]
    results = {
        "first_load_seconds": statistics.median(r["first"] for r in runs),
        "load_seconds": statistics.median(r["load"] for r in runs),
        "verify_seconds": statistics.median(r["verify"] for r in runs),
        "load_seconds_each": [round(r["load"], 3) for r in runs],
        "cache": os.environ.get("STEERSCOPE_CACHE", "~/.cache/steerscope"),
    }
    finish(results, args.json, load_at_start)


if __name__ == "__main__":
    main()
