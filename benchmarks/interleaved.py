"""Shared timing for the benchmarks: variants measured side by side with interleaved, rotating
repetitions, ratios as medians of per-repetition ratios, and the JSON written atomically."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerscope.cache import write_atomic

Variant = Callable[[], Any]


def time_interleaved(
    variants: dict[str, Variant],
    reps: int,
    warm_up: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    before_each: Callable[[], Any] | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Seconds per repetition for each variant (order rotated every repetition), and each
    variant's result from its first timed run. `warm_up` runs every variant once untimed first.
    `clock` is wall time by default; `time.process_time` leaves out time other processes took.
    `before_each` runs untimed before every timed run (e.g. `gc.collect`, so that every run
    starts from the same heap when collection is off during the runs)."""
    if warm_up:
        for run in variants.values():
            run()
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, Any] = {}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if before_each is not None:
                before_each()
            start = clock()
            result = variants[name]()
            seconds[name].append(clock() - start)
            first.setdefault(name, result)
    return seconds, first


def median_ratio(seconds: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over repetitions of time(name) / time(reference) within the same repetition."""
    return statistics.median(t / r for t, r in zip(seconds[name], seconds[reference], strict=True))


def finish(results: dict[str, Any], json_path: Path | None, load_at_start: float) -> None:
    """Record the load average (other processes skew every timing), write and print the JSON."""
    results["load_average_1min"] = {"start": load_at_start, "end": os.getloadavg()[0]}
    text = json.dumps(results, indent=2)
    if json_path:
        write_atomic(Path(json_path), text + "\n")
    print(text)
