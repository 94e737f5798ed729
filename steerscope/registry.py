"""The experiment registry: each experiment is a function from a typed config and a context (the
model and its data) to an `Outcome`, registered once by name with the data kinds it takes.

An `Outcome` renders as one HTML element (`outcome_html`): report.html is that element in a page,
and Jupyter shows it as it is. This module imports nothing of steerscope, so an experiment module
can register itself without pulling in the runner, and the runner can discover experiment modules
without a hand-kept list.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go


@dataclass
class ExperimentConfig:
    """Settings every experiment has; experiments subclass this with their own fields.

    `QUICK` holds the short setting `--quick` applies to fields the caller did not set.
    `RECORD_COUNTS` maps count fields to the (data kind, split)s they draw from ("" for the whole
    source): a count the caller did not set is lowered to what the data holds, and one the
    caller set that the data cannot meet is an error before any forward pass (`steerscope.limits`).
    """

    QUICK: ClassVar[dict[str, Any]] = {}
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {}
    quick: bool = False
    # every random generator steerscope feeds takes it: numpy's RandomState and scikit-learn stop at 2**32 - 1
    seed: Annotated[int, range(2**32)] = 0

    def text_window(self, field: str, data_window: int) -> tuple[int | None, bool]:
        """(window, bos) the text windows counted by `field` are cut with, as `TextData.windows`
        takes them (None: the data's own `data_window`): how many a text holds depends on them."""
        return None, False


@dataclass(repr=False)
class Outcome:
    """What an experiment returns: results for JSON, and what the report shows. A notebook shows
    it as report.html does (summary, tables, figures); `repr` is its name, sizes and summary."""

    results: dict[str, Any]
    summary: str
    figures: list[go.Figure] = dataclasses.field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = dataclasses.field(default_factory=list)

    @property
    def title(self) -> str:
        """The report's title, "steerscope: NAME" (`run_experiment` puts NAME in the results)."""
        return f"steerscope: {self.results.get('experiment', 'outcome')}"

    def __repr__(self) -> str:
        sizes = f"{len(self.figures)} figures, {len(self.tables)} tables, {len(self.results)} results"
        return f"<{self.title}: {sizes}>\n{self.summary}"

    def _repr_html_(self) -> str:
        """Jupyter's view: the element report.html shows (plotly.js inlined, so it works offline)."""
        return outcome_html(self.title, self.summary, self.figures, self.tables)


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


#: Scoped to the rendering's own element, so a notebook's page keeps its look.
_STYLE = (
    "<style>.steerscope-outcome table{border-collapse:collapse;margin:1em 0}"
    ".steerscope-outcome td,.steerscope-outcome th{border:1px solid #ccc;padding:3px 8px;"
    "text-align:right;font-variant-numeric:tabular-nums}"
    ".steerscope-outcome pre{white-space:pre-wrap}</style>"
)


def outcome_html(
    title: str,
    summary: str,
    figures: Sequence[go.Figure] = (),
    tables: Sequence[tuple[str, Sequence[dict[str, Any]]]] = (),
) -> str:
    """An outcome as one HTML element: the title, the summary (HTML-escaped, its line breaks kept),
    each table under its caption, then the figures, with plotly.js inlined before the first so it
    renders offline. `report.html` and a notebook's view of an `Outcome` are both this element."""
    parts = [
        f"<div class='steerscope-outcome'>{_STYLE}<h1>{html.escape(title)}</h1>",
        f"<pre>{html.escape(summary)}</pre>",
    ]
    for caption, rows in tables:
        parts.append(f"<h2>{html.escape(caption)}</h2>{_table(rows)}")
    for i, figure in enumerate(figures):
        parts.append(figure.to_html(full_html=False, include_plotlyjs=(i == 0)))
    parts.append("</div>")
    return "\n".join(parts)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: `run(config, context) -> Outcome` and the data kinds it takes."""

    name: str
    description: str
    config: type[ExperimentConfig]
    run: Callable[[Any, Any], Outcome]
    data_kinds: tuple[str, ...] = ()


class Registry:
    """Experiments by name; registering a name twice is an error (two modules claiming one name)."""

    def __init__(self) -> None:
        self._experiments: dict[str, Experiment] = {}

    def add(self, experiment: Experiment) -> None:
        if experiment.name in self._experiments:
            raise ValueError(f"experiment {experiment.name!r} is registered twice")
        self._experiments[experiment.name] = experiment

    def get(self, name: str) -> Experiment | None:
        return self._experiments.get(name)

    def names(self) -> list[str]:
        return sorted(self._experiments)


#: The registry `steerscope run` and `run_experiment` read.
EXPERIMENTS = Registry()


def register(
    name: str, config: type[ExperimentConfig], description: str, data: tuple[str, ...] = ()
) -> Callable[[Callable[[Any, Any], Outcome]], Callable[[Any, Any], Outcome]]:
    """Decorator adding `run(config, context) -> Outcome` to `EXPERIMENTS` under `name`, taking
    the data kinds `data` (e.g. ("tom", "text"))."""

    def add(run: Callable[[Any, Any], Outcome]) -> Callable[[Any, Any], Outcome]:
        EXPERIMENTS.add(Experiment(name, description, config, run, tuple(data)))
        return run

    return add
