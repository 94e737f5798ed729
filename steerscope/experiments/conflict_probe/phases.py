"""conflict-probe's phases: the memorised facts, one capture of their conflicting and agreeing
prompts, splits by fact, dense probes per site (and the top-probability reference), and with
`sae_probe` a k-sparse probe on SAE codes per layer."""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

import torch
from tqdm.auto import tqdm

from steerscope.capture import capture
from steerscope.context import ExperimentContext
from steerscope.data.facts import split_facts
from steerscope.data.records import Conflict
from steerscope.data.suite import ConflictData
from steerscope.errors import InputError
from steerscope.experiments.conflict_probe.config import ConflictProbeConfig
from steerscope.model import ModelLike
from steerscope.probes.knowledge import conflict_pairs, known_conflicts
from steerscope.probes.linear_probe import probe_metrics, train_probe
from steerscope.probes.sparse_probe import SparseProbe, top_activating, train_sparse_probe
from steerscope.sites import Site
from steerscope.steering.experiment_saes import experiment_saes
from steerscope.steering.sae import encode_pre

SITE_KINDS = ("resid_post", "attn_out", "mlp_out")
SAE_QUALITY = ("fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens")  # from the SAE's report


def _mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean and standard deviation over restarts of each metric."""
    row = {}
    for key in ("acc", "auc", "auprc"):
        values = [r[key] for r in runs]
        row[key] = statistics.fmean(values)
        row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return row


def probe_sites(model: ModelLike) -> list[Site]:
    """Every layer's residual, attention and MLP output (`SITE_KINDS`)."""
    return [Site(layer, kind) for kind in SITE_KINDS for layer in range(model.anatomy.n_layers)]


def probed_conflicts(config: ConflictProbeConfig, context: ExperimentContext) -> ConflictData:
    """The conflict data whose candidates are probed: the data's own, or with `facts="trained"`
    the organism's facts asked with contexts in training (an InputError where there are none)."""
    conflicts = context.data.need("conflicts")
    if config.facts == "candidates":
        return conflicts
    if conflicts.trained is None:
        raise InputError(
            f"conflict-probe: facts='trained' needs an organism trained on facts with contexts "
            f"(organism:sources, organism:sources-planted); {conflicts.source} has none; use facts='candidates'"
        )
    return dataclasses.replace(conflicts, candidates=conflicts.trained)


def memorised_facts(
    config: ConflictProbeConfig, context: ExperimentContext
) -> tuple[list[Conflict], list[Conflict]]:
    """The candidate facts tried closed-book and those the model answers right (at least 10)."""
    model, conflicts = context.model, probed_conflicts(config, context)
    tried, facts = known_conflicts(
        model, conflicts, config.n_candidates, config.demos, config.seed, progress=True
    )
    if len(facts) < 10:
        raise InputError(
            f"conflict-probe: only {len(facts)} of {len(tried)} facts from {conflicts.source} are memorised "
            "(answered right closed-book); a probe needs at least 10"
        )
    return tried, facts


def capture_pairs(
    config: ConflictProbeConfig, context: ExperimentContext, facts: list[Conflict]
) -> tuple[list[str], Any, torch.Tensor]:
    """Every fact's conflicting then agreeing prompt, their last-token activations at every probe
    site with the next-token logits, and the labels (1: conflicting)."""
    model = context.model
    conflicting, agreeing = conflict_pairs(facts, context.data.need("conflicts"), config.demos, config.seed)
    # One forward for the probes' activations and the reference's top-token probability.
    acts = capture(model, conflicting + agreeing, probe_sites(model), reduce="last", next_token_logits=True)
    labels = torch.cat([torch.ones(len(facts)), torch.zeros(len(facts))]).long()
    return conflicting + agreeing, acts, labels


def split_by_fact(
    config: ConflictProbeConfig, context: ExperimentContext, tried: list[Conflict], facts: list[Conflict]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per restart, the (train, held-out) prompt rows of a split of the facts: a fact's two
    prompts land on the same side."""
    index = {fact: i for i, fact in enumerate(facts)}

    def rows_of(group: list[Conflict]) -> torch.Tensor:
        """Both prompts (conflicting at i, agreeing at n + i) of every fact in `group`."""
        return torch.tensor([index[f] for f in group] + [index[f] + len(facts) for f in group])

    parts = [
        split_facts(facts, config.held_out, seed=config.seed + restart) for restart in range(config.restarts)
    ]
    context.used(
        "conflicts",
        facts=config.facts,
        candidates=len(tried),
        memorised=len(facts),
        train=len(parts[0][0]),
        held_out=len(parts[0][1]),
    )
    return [(rows_of(train), rows_of(held)) for train, held in parts]


def dense_probes(
    model: ModelLike, acts: Any, labels: torch.Tensor, splits: list[tuple[torch.Tensor, torch.Tensor]]
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """A linear probe per site, and the reference (a threshold on the top answer probability),
    each with held-out metrics averaged over the splits."""

    def fitted(x: torch.Tensor) -> dict[str, float]:
        """Held-out metrics of a probe on features x, averaged over the restarts' splits."""
        return _mean_metrics(
            [probe_metrics(train_probe(x[tr], labels[tr]), x[te], labels[te]) for tr, te in splits]
        )

    rows = [
        {"layer": site.layer, "site": site.kind, **fitted(acts[site])}
        for site in tqdm(probe_sites(model), desc="probes", leave=False)
    ]
    reference = fitted(-acts.next_token_logits.softmax(-1).amax(-1)[:, None])
    return rows, reference


def sae_probes(
    config: ConflictProbeConfig,
    context: ExperimentContext,
    acts: Any,
    labels: torch.Tensor,
    splits: list[tuple[torch.Tensor, torch.Tensor]],
    prompts: list[str],
) -> list[dict[str, Any]]:
    """The SAE-feature probe at each SAE layer on the dense probes' splits, with its SAE's quality."""
    sae_sites = [
        Site(layer, "resid_post") for layer in sae_probe_layers(config, context.model.anatomy.n_layers)
    ]
    saes = experiment_saes(context, sae_sites, config.sae_train_settings(config.seed), config.demos)
    return [
        {
            "layer": site.layer,
            "site": site.kind,
            **sae_probe_row(encode_pre(saes[str(site)].sae, acts[site]), labels, splits, prompts, config),
            "sae_quality": {key: saes[str(site)].report[key] for key in SAE_QUALITY},
        }
        for site in tqdm(sae_sites, desc="SAE probes", leave=False)
    ]


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
