"""`conflict-probe`: can a linear probe on one layer's activations at the last prompt token tell
a context that contradicts the model's memory from one that agrees with it? (Zhao et al. 2025,
the probing companion of SpARE, arXiv 2410.16090.) Split by fact, several restarts. The conflict
records come from the context: the natural fact table with neutral demonstrations for a pretrained
model, held-out facts with unmarked prompts for an organism, or the user's NQ-Swap-style records. Beside the probes, a reference readout
thresholds the model's own top next-token probability (a conflict splits the answer between two
words): when it separates the prompts and a linear probe does not, the model has the information
but not as a linear direction at that site.

With `sae_probe=True`, beside the dense residual probe at each of `sae_layers`, a k-sparse probe
reads the SAE codes of the same activations (`steerscope.probes.sparse_probe`: at most
`sae_probe_k` features chosen along the L1 logistic path, or by mutual information), on the same
splits by fact, and names the features it uses with their top-activating prompts. The SAEs are the
ones `spare` and `steerscope build sae:SITE` cache (same settings, same texts: same SAEs); the
cache lacks them until one of those has run, and training them is minutes per layer on Gemma 3
270M at the default 1.1M tokens, so the SAE probe is off by default."""

from __future__ import annotations

import dataclasses
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
from steerscope.probes.sparse_probe import Selection, SparseProbe, top_activating, train_sparse_probe
from steerscope.registry import ExperimentConfig, Outcome, register
from steerscope.settings import Count, Layer, NonEmpty, Range
from steerscope.sites import Site
from steerscope.steering.experiment_saes import SAESettings, experiment_saes
from steerscope.steering.sae import encode_pre

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")
SAE_QUALITY = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens")  # from the SAE's report


@dataclass
class ConflictProbeConfig(SAESettings, ExperimentConfig):
    QUICK: ClassVar[dict[str, Any]] = dict(n_candidates=80, restarts=2)
    RECORD_COUNTS: ClassVar[dict[str, tuple[tuple[str, str], ...]]] = {"n_candidates": (("conflicts", ""),)}
    n_candidates: Count | None = None  # facts tried closed-book (None: all the data offers)
    demos: Annotated[int, Range(0)] = 3
    held_out: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.3
    restarts: Count = 3
    # a sparse probe on SAE codes beside the dense residual probe (trains the SAEs the cache lacks)
    sae_probe: bool = False
    # layers of the SAE probe (resid_post); None: the four middle layers spare edits (7-10 on Gemma 3 270M)
    sae_layers: Annotated[list[Layer], NonEmpty()] | None = None
    sae_probe_k: Count = 8  # at most this many SAE features per probe
    sae_probe_selection: Selection = "l1"  # L1 logistic path, or top-k mutual information
    sae_top_prompts: Count = 3  # top-activating prompts shown per feature

    def __post_init__(self) -> None:
        changed = [
            f.name
            for f in dataclasses.fields(self)
            if f.name.startswith("sae_") and getattr(self, f.name) != f.default
        ]
        if changed and not self.sae_probe:  # the runner names the experiment
            raise InputError(
                f"{', '.join(changed)} {'applies' if len(changed) == 1 else 'apply'} only with "
                "sae_probe=True (the SAE-feature probe is off)"
            )


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
    data=("conflicts", "text"),
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
        "sae_probe": None,
    }
    summary = (
        f"{model.source}: {len(facts)} memorised facts of {n_tried} tried; conflict vs agreeing "
        f"context, probes split by fact, {config.restarts} restarts.\nbest: L{best['layer']}.{best['site']} "
        f"accuracy {best['acc']:.3f} ± {best['acc_sd']:.3f}, AUC {best['auc']:.3f}, AUPRC {best['auprc']:.3f}\n"
        f"reference (threshold on the top answer probability): accuracy {reference['acc']:.3f} "
        f"± {reference['acc_sd']:.3f}, AUC {reference['auc']:.3f}"
    )
    figures = [accuracy_figure(rows, reference["acc"])]
    tables = [("Per layer", rows)]
    if config.sae_probe:
        results["sae_probe"], sae_text, sae_fig, sae_tables = sae_probe_part(
            config, context, acts, labels, splits, conflicting + agreeing, rows
        )
        summary += "\n" + sae_text
        figures.append(sae_fig)
        tables += sae_tables
    return Outcome(results=results, summary=summary, figures=figures, tables=tables)


def sae_probe_part(
    config: ConflictProbeConfig,
    context: ExperimentContext,
    acts: Any,
    labels: torch.Tensor,
    splits: list[tuple[torch.Tensor, torch.Tensor]],
    prompts: list[str],
    rows: list[dict[str, Any]],
) -> tuple[dict[str, Any], str, go.Figure, list[tuple[str, list[dict[str, Any]]]]]:
    """The SAE-feature probes at each SAE layer on the dense probes' splits: their results entry,
    summary lines, figure and tables, beside the dense resid_post `rows`."""
    sae_sites = [
        Site(layer, "resid_post") for layer in sae_probe_layers(config, context.model.anatomy.n_layers)
    ]
    saes = experiment_saes(context, sae_sites, config.sae_train_settings(config.seed), config.demos)
    sae_rows = [
        {
            "layer": site.layer,
            "site": site.kind,
            **sae_probe_row(encode_pre(saes[str(site)].sae, acts[site]), labels, splits, prompts, config),
            "sae_quality": {key: saes[str(site)].report[key] for key in SAE_QUALITY},
        }
        for site in tqdm(sae_sites, desc="SAE probes", leave=False)
    ]
    dense = {r["layer"]: r for r in rows if r["site"] == "resid_post"}
    entry = {"selection": config.sae_probe_selection, "k": config.sae_probe_k, "layers": sae_rows}
    tables = [
        ("Dense vs SAE-feature probe (resid_post)", sae_table(sae_rows, dense)),
        ("SAE-probe features and their top-activating prompts", feature_table(sae_rows)),
    ]
    return entry, sae_summary(sae_rows, dense, config), sae_figure(rows, sae_rows), tables


def sae_probe_layers(config: ConflictProbeConfig, n_layers: int) -> list[int]:
    """`sae_layers`, or the four consecutive middle layers spare's default edits (n_layers // 2 - 2
    to n_layers // 2 + 1: 7-10 on Gemma 3 270M), shifted to fit the model."""
    if config.sae_layers is not None:
        return sorted(set(config.sae_layers))
    start = min(max(0, n_layers // 2 - 2), max(0, n_layers - 4))
    return list(range(start, min(n_layers, start + 4)))


def sae_probe_row(
    codes: torch.Tensor,
    labels: torch.Tensor,
    splits: list[tuple[torch.Tensor, torch.Tensor]],
    prompts: list[str],
    config: ConflictProbeConfig,
) -> dict[str, Any]:
    """Held-out metrics of the sparse probe on SAE codes [prompts, d_sae], averaged over the
    dense probe's splits by fact, and the features of the first split's probe: id, weight (on the
    standardised feature), in how many splits' probes it is, and its top-activating prompts."""
    probes: list[SparseProbe] = [
        train_sparse_probe(codes[tr], labels[tr], config.sae_probe_k, config.sae_probe_selection, config.seed)
        for tr, _ in splits
    ]
    metrics = _mean_metrics(
        [probe_metrics(p, codes[te], labels[te]) for p, (_, te) in zip(probes, splits, strict=True)]
    )
    chosen = [set(p.features.tolist()) for p in probes]
    features = [
        {
            "feature": feature,
            "weight": weight,
            "in_splits": sum(feature in c for c in chosen),
            "top_prompts": [
                {
                    "prompt": row,
                    "conflict": bool(labels[row]),
                    "activation": activation,
                    "text": prompts[row].rsplit("\n\n", 1)[-1],
                }
                for row, activation in top_activating(codes, feature, config.sae_top_prompts)
            ],
        }
        for feature, weight in probes[0].weights()
    ]
    return {**metrics, "n_features": len(features), "features": features}


def accuracy_figure(rows: list[dict[str, Any]], reference: float | None = None) -> go.Figure:
    """Held-out probe accuracy per layer, one line per site kind, with restart spread, and the
    top-probability reference's accuracy if given."""
    lines = {kind: [r for r in rows if r["site"] == kind] for kind in SITE_KINDS}
    return _accuracy_lines(lines, "Conflict detection: held-out probe accuracy per layer", reference)


def _accuracy_lines(
    lines: dict[str, list[dict[str, Any]]], title: str, reference: float | None = None
) -> go.Figure:
    """One line of held-out accuracy per layer (restart spread as error bars) per named row list,
    chance, and the top-probability reference's accuracy if given."""
    figure = go.Figure()
    for name, mine in lines.items():
        figure.add_scatter(
            x=[r["layer"] for r in mine],
            y=[r["acc"] for r in mine],
            error_y=dict(type="data", array=[r["acc_sd"] for r in mine]),
            mode="lines+markers",
            name=name,
        )
    figure.add_hline(y=0.5, line_dash="dot", annotation_text="chance")
    if reference is not None:
        figure.add_hline(y=reference, line_dash="dash", annotation_text="top-probability reference")
    figure.update_layout(title=title, xaxis_title="layer", yaxis_title="accuracy")
    return figure


def sae_summary(
    sae_rows: list[dict[str, Any]], dense: dict[int, dict[str, Any]], config: ConflictProbeConfig
) -> str:
    """Summary lines: the SAE-feature probe against the dense residual probe, per layer."""
    lines = [
        f"SAE-feature probe ({config.sae_probe_selection}, at most {config.sae_probe_k} features) vs dense "
        "resid_post probe, held-out accuracy (AUC):"
    ]
    for row in sae_rows:
        base = dense[row["layer"]]
        used = ", ".join(f"{f['feature']}" for f in row["features"][:4])
        lines.append(
            f"  L{row['layer']}: SAE {row['acc']:.3f} ± {row['acc_sd']:.3f} ({row['auc']:.3f}) with "
            f"{row['n_features']} features [{used}{', ...' if row['n_features'] > 4 else ''}]; "
            f"dense {base['acc']:.3f} ± {base['acc_sd']:.3f} ({base['auc']:.3f})"
        )
    return "\n".join(lines)


def sae_table(sae_rows: list[dict[str, Any]], dense: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per SAE layer: dense and SAE-feature probe metrics and the features used."""
    return [
        {
            "layer": row["layer"],
            "dense_acc": dense[row["layer"]]["acc"],
            "dense_auc": dense[row["layer"]]["auc"],
            "sae_acc": row["acc"],
            "sae_acc_sd": row["acc_sd"],
            "sae_auc": row["auc"],
            "n_features": row["n_features"],
            "sae_fvu": row["sae_quality"]["fvu"],
            "sae_ce_recovered": row["sae_quality"]["ce_loss_recovered"],
            "features (weight)": ", ".join(f"{f['feature']} ({f['weight']:+.2f})" for f in row["features"]),
        }
        for row in sae_rows
    ]


def feature_table(sae_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (layer, feature, top-activating prompt): what each probe feature fires on."""
    return [
        {
            "layer": row["layer"],
            "feature": feature["feature"],
            "weight": feature["weight"],
            "in_splits": feature["in_splits"],
            "activation": top["activation"],
            "conflict": top["conflict"],
            "prompt (last block)": top["text"],
        }
        for row in sae_rows
        for feature in row["features"]
        for top in feature["top_prompts"]
    ]


def sae_figure(rows: list[dict[str, Any]], sae_rows: list[dict[str, Any]]) -> go.Figure:
    """Held-out accuracy per layer of the dense resid_post probe and of the SAE-feature probe,
    with restart spread."""
    lines = {
        "dense resid_post probe": [r for r in rows if r["site"] == "resid_post"],
        "SAE-feature probe": sae_rows,
    }
    return _accuracy_lines(
        lines, "Conflict detection: dense vs SAE-feature probe, held-out accuracy per layer"
    )
