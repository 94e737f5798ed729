"""Write a run's `results.json` and a self-contained `report.html` (plotly JS inlined, no CDN); and
`quoted`, generated text on one summary line."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from steerscope.cache import write_atomic
from steerscope.registry import outcome_html


def _jsonable(value: Any) -> Any:
    """Tensors, numpy values and non-finite floats made JSON-safe (NaN/Inf become null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """Write `out/results.json` atomically and return its path."""
    path = out / "results.json"
    write_atomic(path, json.dumps(_jsonable(results), indent=2) + "\n")
    return path


def quoted(text: str) -> str:
    """Generated text on one summary line: in quotes, each run of whitespace (line breaks
    included) one space. (A repr would show its line breaks as a literal \\n in the report.)"""
    return '"' + " ".join(text.split()) + '"'


def write_report(
    out: Path,
    title: str,
    summary: str,
    figures: Sequence[go.Figure] = (),
    tables: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
    run_id: str | None = None,
) -> Path:
    """Write `out/report.html`: `outcome_html` as a self-contained page, marked with `run_id` (the
    one results.json holds) in a meta tag and in a line after the outcome."""
    run = "" if run_id is None else html.escape(run_id)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta name='steerscope-run-id' content='{run}'>" if run else "",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}</style>",
        f"</head><body>{outcome_html(title, summary, figures, tables)}",
        f"<p>run {run}</p>" if run else "",
        "</body></html>",
    ]
    path = out / "report.html"
    write_atomic(path, "\n".join(parts))
    return path
