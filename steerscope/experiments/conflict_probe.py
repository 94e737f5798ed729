"""`conflict-probe`: can a linear probe on one layer's activations at the last prompt token tell
a context that contradicts the model's memory from one that agrees with it? (Zhao et al. 2025,
the probing companion of SpARE, arXiv 2410.16090.) Split by fact, several restarts."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Any, ClassVar

import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from steerscope.capture import capture
from steerscope.data.facts import FACTS, Fact, context_prompt, demonstrations, split_facts, substitute
from steerscope.experiments import ExperimentConfig, Outcome, register
from steerscope.loading import load
from steerscope.model import Model
from steerscope.probes.knowledge import memorised_facts
from steerscope.probes.linear_probe import probe_metrics, train_probe
from steerscope.sites import Site

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")


@dataclass
class ConflictProbeConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_candidates=80, restarts=2)
    n_candidates: int = len(FACTS)  # facts tried closed-book; the memorised ones are probed
    demos: int = 3
    held_out: float = 0.3
    restarts: int = 3


def known_facts(model: Model, n_candidates: int, demos: int, seed: int) -> list[Fact]:
    """The memorised facts among `n_candidates` drawn from the table (deterministic by seed)."""
    candidates = random.Random(f"candidates/{seed}").sample(list(FACTS), min(n_candidates, len(FACTS)))
    return memorised_facts(model, candidates, demos=demos, seed=seed)


def conflict_pairs(facts: list[Fact], demos: int, seed: int) -> tuple[list[str], list[str]]:
    """For each fact, a conflicting and an agreeing context prompt with the same neutral demos."""
    conflicting, agreeing = [], []
    for fact in facts:
        shown = demonstrations(fact, "none", demos, seed)
        conflicting.append(context_prompt(fact, shown, conflict=True, substitute=substitute(fact, seed)))
        agreeing.append(context_prompt(fact, shown, conflict=False))
    return conflicting, agreeing


@register(
    "conflict-probe", ConflictProbeConfig, "linear probes detecting a context-memory conflict per layer"
)
def run(config: ConflictProbeConfig) -> Outcome:
    model = load(config.model)
    facts = known_facts(model, config.n_candidates, config.demos, config.seed)
    if len(facts) < 10:
        raise ValueError(f"only {len(facts)} memorised facts; a probe needs at least 10")
    conflicting, agreeing = conflict_pairs(facts, config.demos, config.seed)
    sites = [Site(layer, kind) for kind in SITE_KINDS for layer in range(model.anatomy.n_layers)]
    acts = capture(model, conflicting + agreeing, sites, reduce="last")
    labels = torch.cat([torch.ones(len(facts)), torch.zeros(len(facts))]).long()
    index = {fact: i for i, fact in enumerate(facts)}

    def rows_of(group: list[Fact]) -> torch.Tensor:
        """Both prompts (conflicting at i, agreeing at n + i) of every fact in `group`."""
        return torch.tensor([index[f] for f in group] + [index[f] + len(facts) for f in group])

    rows = []
    for site in tqdm(sites, desc="probes", leave=False):
        x = acts[site]
        runs = []
        for restart in range(config.restarts):
            train, held = split_facts(facts, config.held_out, seed=config.seed + restart)
            tr, te = rows_of(train), rows_of(held)
            runs.append(probe_metrics(train_probe(x[tr], labels[tr]), x[te], labels[te]))
        row: dict[str, Any] = {"layer": site.layer, "site": site.kind}
        for key in ("acc", "auc", "auprc"):
            values = [r[key] for r in runs]
            row[key] = statistics.fmean(values)
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    best = max(rows, key=lambda r: r["acc"])
    results = {
        "model": model.source,
        "n_memorised": len(facts),
        "n_candidates": config.n_candidates,
        "layers": rows,
        "best": best,
    }
    summary = (
        f"{model.source}: {len(facts)} memorised facts of {config.n_candidates} tried; conflict vs agreeing "
        f"context, probes split by fact, {config.restarts} restarts.\nbest: L{best['layer']}.{best['site']} "
        f"accuracy {best['acc']:.3f} ± {best['acc_sd']:.3f}, AUC {best['auc']:.3f}, AUPRC {best['auprc']:.3f}"
    )
    return Outcome(
        results=results, summary=summary, figures=[accuracy_figure(rows)], tables=[("Per layer", rows)]
    )


def accuracy_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Held-out probe accuracy per layer, one line per site kind, with restart spread."""
    figure = go.Figure()
    for kind in SITE_KINDS:
        mine = [r for r in rows if r["site"] == kind]
        figure.add_scatter(
            x=[r["layer"] for r in mine],
            y=[r["acc"] for r in mine],
            error_y=dict(type="data", array=[r["acc_sd"] for r in mine]),
            mode="lines+markers",
            name=kind,
        )
    figure.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    figure.update_layout(
        title="Conflict detection: held-out probe accuracy per layer",
        xaxis_title="layer",
        yaxis_title="accuracy",
    )
    return figure
