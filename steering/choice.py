"""Choosing a setting on dev items, then measuring it once on held-out items.

The discipline of the steering experiments (`spare`, `efficiency`): every setting of a grid is
measured on dev items (`grid_rows`, optionally beside a random control of the same setting), a
rule picks one setting per grid (`highest`: the best score, ties to the gentler edit;
`fewest_within_tolerance`: the cheapest setting that keeps accuracy), and only the chosen
settings touch the held-out items, each measured once with its paired change against the
unedited run on the same items (`held_out_rows`; intervals from `steerscope.probes.intervals`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

Row = dict[str, Any]
S = TypeVar("S")
R = TypeVar("R")


def grid_rows(
    settings: Sequence[S],
    describe: Callable[[S], Row],
    measure: Callable[[S], Row],
    control: Callable[[S], Row] | None = None,
    progress: str | None = None,
) -> list[Row]:
    """One row per setting, in order: its description, its dev measurement and, with `control`,
    the measurement of its random control (keys prefixed `random_`). `progress`: a bar's title."""
    rows = []
    for setting in tqdm(settings, desc=progress, disable=progress is None, leave=False):
        row = {**describe(setting), **measure(setting)}
        if control is not None:
            row.update({f"random_{key}": value for key, value in control(setting).items()})
        rows.append(row)
    return rows


def highest(rows: Sequence[Row], score: Callable[[Row], float], gentler: Callable[[Row], tuple]) -> int:
    """Index of the row with the highest `score`; ties go to the smallest `gentler` key (then
    to the first row)."""
    return min(range(len(rows)), key=lambda i: (-score(rows[i]), *gentler(rows[i])))


def fewest_within_tolerance(
    baseline: Row, rows: Sequence[Row], tolerance: float = 0.02, cost: str = "mean_thinking_tokens"
) -> int | None:
    """Index into `rows` of the lowest `cost` among rows that cost less than `baseline` at an
    accuracy at most `tolerance` below its (a missing accuracy counts as 0); None if none does."""
    base = baseline["accuracy"] or 0.0
    allowed = [
        i
        for i, row in enumerate(rows)
        if (row["accuracy"] or 0.0) >= base - tolerance and row[cost] < baseline[cost]
    ]
    if not allowed:
        return None
    return min(allowed, key=lambda i: rows[i][cost])


def mark_chosen(rows: Sequence[Row], index: int | None) -> list[Row]:
    """`rows` with a `chosen` flag, true at `index` only."""
    return [{**row, "chosen": i == index} for i, row in enumerate(rows)]


def held_out_rows(
    settings: Sequence[S],
    describe: Callable[[S], Row],
    measure: Callable[[S], tuple[Row, R]],
    baseline: R,
    change: Callable[[R, R], Row],
    progress: str | None = None,
) -> list[Row]:
    """Each setting measured once on the held-out items: its description, its measured row and
    `change(baseline, result)`, its paired change against the unedited result on the same items.
    `progress`: a bar's title."""
    rows = []
    for setting in tqdm(settings, desc=progress, disable=progress is None, leave=False):
        row, result = measure(setting)
        rows.append({**describe(setting), **row, **change(baseline, result)})
    return rows
