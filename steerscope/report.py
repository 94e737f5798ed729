"""Write a run's `results.json` and a self-contained `report.html` (plotly JS inlined, no CDN)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from steerscope.cache import write_atomic


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


def _table(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_report(
    out: Path,
    title: str,
    summary: str,
    figures: Sequence[go.Figure] = (),
    tables: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
    run_id: str | None = None,
) -> Path:
    """Write `out/report.html`: a summary paragraph, tables, then figures, with plotly.js inlined once;
    `run_id` (the one results.json holds) in a meta tag and under the title."""
    run = "" if run_id is None else html.escape(run_id)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<meta name='steerscope-run-id' content='{run}'>" if run else "",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right;font-variant-numeric:tabular-nums}pre{white-space:pre-wrap}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        f"<p>run {run}</p>" if run else "",
        f"<pre>{html.escape(summary)}</pre>",
    ]
    for caption, rows in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>{_table(rows)}")
    for i, figure in enumerate(figures):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</body></html>")
    path = out / "report.html"
    write_atomic(path, "\n".join(parts))
    return path
