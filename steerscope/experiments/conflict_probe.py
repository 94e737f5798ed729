"""`conflict-probe`: can a linear probe on one layer's activations at the last prompt token tell
a context that contradicts the model's memory from one that agrees with it? (Zhao et al. 2025,
the probing companion of SpARE, arXiv 2410.16090.) Split by fact, several restarts. The conflict
records come from the context: the natural fact table with neutral demonstrations for a pretrained
model, held-out facts with unmarked prompts for an organism, or the user's NQ-Swap-style records. Beside the probes, a reference readout
thresholds the model's own top next-token probability (a conflict splits the answer between two
words): when it separates the prompts and a linear probe does not, the model has the information
but not as a linear direction at that site."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import plotly.graph_objects as go
import torch
from tqdm.auto import tqdm

from steerscope.capture import capture
from steerscope.context import ExperimentContext
from steerscope.data.facts import split_facts
from steerscope.data.records import Conflict
from steerscope.errors import InputError
from steerscope.probes.knowledge import conflict_pairs, known_conflicts
from steerscope.probes.linear_probe import probe_metrics, train_probe
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, Range
from steerscope.sites import Site

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")


@dataclass
class ConflictProbeConfig(ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_candidates=80, restarts=2)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_candidates": (("conflicts", ""),)}
    n_candidates: Count | None = None  # facts tried closed-book (None: all the data offers)
    demos: Annotated[int, Range(0)] = 3
    held_out: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    restarts: Count = 3


def _mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over restarts of each metric."""
    row = {}
    for key in ("acc", "auc", "auprc"):
        values = [r[key] for r in runs]
        row[key] = statistics.fmean(values)
        row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


@register(
    "conflict-probe",
    ConflictProbeConfig,
    "linear probes detecting a context-memory conflict per layer",
    data=("conflicts",),
)
def run(config: ConflictProbeConfig, context: ExperimentContext) -> Outcome:
    model, conflicts = context.model, context.data.need("conflicts")
    tried, facts = known_conflicts(
        model, conflicts, config.n_candidates, config.demos, config.seed, progress=True
    )
    n_tried = len(tried)
    if len(facts) < 10:
        raise InputError(
            f"conflict-probe: only {len(facts)} of {n_tried} facts from {conflicts.source} are memorised "
            "(answered right closed-book); a probe needs at least 10"
        )
    conflicting, agreeing = conflict_pairs(facts, conflicts, config.demos, config.seed)
    sites = [Site(layer, kind) for kind in SITE_KINDS for layer in range(model.anatomy.n_layers)]
    # One forward for the probes' activations and the reference's top-token probability.
    acts = capture(model, conflicting + agreeing, sites, reduce="last", next_token_logits=True)
    labels = torch.cat([torch.ones(len(facts)), torch.zeros(len(facts))]).long()
    index = {fact: i for i, fact in enumerate(facts)}

    def rows_of(group: list[Conflict]) -> torch.Tensor:
        """Both prompts (conflicting at i, agreeing at n + i) of every fact in `group`."""
        return torch.tensor([index[f] for f in group] + [index[f] + len(facts) for f in group])

    parts = [
        split_facts(facts, config.held_out, seed=config.seed + restart) for restart in range(config.restarts)
    ]
    splits = [(rows_of(train), rows_of(held)) for train, held in parts]
    context.used(
        "conflicts",
        candidates=n_tried,
        memorised=len(facts),
        train=len(parts[0][0]),
        held_out=len(parts[0][1]),
    )

    def fitted(x: torch.Tensor) -> dict[str, float]:
        """Held-out metrics of a probe on features x, averaged over the restarts' splits."""
        return _mean_metrics(
            [probe_metrics(train_probe(x[tr], labels[tr]), x[te], labels[te]) for tr, te in splits]
        )

    rows = [
        {"layer": site.layer, "site": site.kind, **fitted(acts[site])}
        for site in tqdm(sites, desc="probes", leave=False)
    ]
    best = max(rows, key=lambda r: r["acc"])
    reference = fitted(-acts.next_token_logits.softmax(-1).amax(-1)[:, None])
    results = {
        "model": model.source,
        "n_memorised": len(facts),
        "n_candidates": n_tried,
        "layers": rows,
        "best": best,
        "reference_top_probability": reference,
    }
    summary = (
        f"{model.source}: {len(facts)} memorised facts of {n_tried} tried; conflict vs agreeing "
        f"context, probes split by fact, {config.restarts} restarts.\nbest: L{best['layer']}.{best['site']} "
        f"accuracy {best['acc']:.3f} ± {best['acc_sd']:.3f}, AUC {best['auc']:.3f}, AUPRC {best['auprc']:.3f}\n"
        f"reference (threshold on the top answer probability): accuracy {reference['acc']:.3f} "
        f"± {reference['acc_sd']:.3f}, AUC {reference['auc']:.3f}"
    )
    return Outcome(
        results=results,
        summary=summary,
        figures=[accuracy_figure(rows, reference["acc"])],
        tables=[("Per layer", rows)],
    )


def accuracy_figure(rows: list[dict[str, Any]], reference: float | None = None) -> go.Figure:
    """Held-out probe accuracy per layer, one line per site kind, with restart spread, and the
    top-probability reference's accuracy if given."""
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
    if reference is not None:
        figure.add_hline(y=reference, line_dash="dash", annotation_text="top-probability reference")
    figure.update_layout(
        title="Conflict detection: held-out probe accuracy per layer",
        xaxis_title="layer",
        yaxis_title="accuracy",
    )
    return figure
