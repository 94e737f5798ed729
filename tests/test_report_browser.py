"""A run's report and a notebook's view of its `Outcome`, opened in a real browser (headless
Chromium): every figure draws, the summary reads as written, and the page logs no error."""

from __future__ import annotations

from pathlib import Path

import pytest
from headless_chromium import Chromium, PageView, find_chromium

from steerscope.registry import Outcome
from steerscope.runner import run_experiment

#: Waits (up to 5 s) until every plotly figure of the page has drawn its SVG, then counts.
DRAWN = """new Promise(done => {
  const start = Date.now();
  const look = () => {
    const graphs = [...document.querySelectorAll('.plotly-graph-div')];
    const drawn = graphs.filter(g => g._fullLayout && g.querySelector('svg.main-svg')).length;
    if (drawn === graphs.length || Date.now() - start > 5000) {
      done({graphs: graphs.length, drawn, summary: document.querySelector('pre').innerText});
    } else {
      setTimeout(look, 50);
    }
  };
  look();
})"""


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        pytest.fail("no chromium on PATH: `make test` installs it (apt-get install -y chromium)")
    with Chromium(executable) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Outcome, Path]:
    """tom-sensitivity on a tiny Gemma 3 (line plots with error bars on a log axis, a heatmap,
    grouped bars; a summary of several lines) and the folder it wrote."""
    folder = tmp_path_factory.mktemp("tom")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STEERSCOPE_CACHE", str(folder / "cache"))
        outcome = run_experiment(
            "tom-sensitivity",
            folder / "run",
            model="tiny:gemma3",
            sparsities=[0.03],
            n_fisher=4,
            n_eval_tom=8,
            n_eval_windows=2,
            random_seeds=1,
        )
    return outcome, folder / "run"


def check_drawn(view: PageView, outcome: Outcome) -> None:
    """Every figure drew, the summary reads as written (line breaks, no escapes), no error."""
    assert view.errors == []
    assert view.value["graphs"] == view.value["drawn"] == len(outcome.figures) == 5
    assert view.value["summary"] == outcome.summary and outcome.summary.count("\n") >= 3


def test_report_draws_every_figure_and_logs_no_error(run, browser):
    outcome, folder = run
    check_drawn(browser.open(folder / "report.html", DRAWN), outcome)


def test_a_notebook_shows_the_outcome_as_the_report_does(run, browser, tmp_path):
    outcome, _ = run
    page = tmp_path / "cell.html"  # the HTML Jupyter puts in the output cell, in a page of its own
    page.write_text(f"<!doctype html><html><body>{outcome._repr_html_()}</body></html>")
    check_drawn(browser.open(page, DRAWN), outcome)


def test_a_broken_figure_is_seen(run, browser, tmp_path):
    outcome, folder = run
    report = (folder / "report.html").read_text()
    last = report.rindex("Plotly.newPlot(")  # the last figure draws into an undefined element
    page = tmp_path / "broken.html"
    page.write_text(report[:last] + report[last:].replace("newPlot(", "newPlot(undefinedFigure, ", 1))
    view = browser.open(page, DRAWN)
    assert view.value["graphs"] == 5 and view.value["drawn"] == 4
    assert len(view.errors) == 1 and "undefinedFigure is not defined" in view.errors[0]


def test_repr_names_the_run_and_shows_its_summary(run):
    outcome, _ = run
    assert repr(outcome) == (
        f"<steerscope: tom-sensitivity: 5 figures, 1 tables, {len(outcome.results)} results>\n"
        + outcome.summary
    )
