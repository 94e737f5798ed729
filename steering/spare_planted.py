"""SpARE against a known answer: on an organism trained with planted directions
(`steerscope.organisms.planted`), do the SAE features SpARE selects lie along the directions that
carry the choice, does the SAE have such features at all, and does MI rank them first?

`subspace_alignment` is the geometry: the cosine of each vector with each basis direction and with
the basis' span, and how much of the span the vectors' own span covers. `planted_alignment` applies
it to SpARE's selections and, for each planted direction, to the best-aligned feature of the whole
dictionary with its MI rank, so a failure can be placed: no feature along the direction (the SAE),
one that MI ranks low (the selection), or one selected whose edit does not move answers (the edit).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from steerscope.intervene import Edit
from steerscope.kernels.sae_edit import sae_parts
from steerscope.organisms import OrganismSpec
from steerscope.organisms.planted import N_OPTIONS, option_edit, planted_directions
from steerscope.steering.spare import Selection, decreasing_mi

#: The planted directions by row of `planted_directions`, named as on organism:sources-planted.
DIRECTION_NAMES = ("context", "memory", "conflict")


def subspace_alignment(vectors: Tensor, basis: Tensor) -> tuple[Tensor, Tensor, float]:
    """(cos [n, k], cos_span [n], coverage) of vectors [n, d] against an orthonormal basis [k, d].

    cos: each vector's cosine with each basis direction (signed); cos_span: with the span (the norm
    of its unit vector's projection, in [0, 1]); coverage: the share of the span that the vectors'
    span holds, trace(P_V P_B) / k in [0, 1] (1: every basis direction is a combination of the
    vectors; 0 for no vectors).
    """
    if vectors.dim() != 2 or basis.dim() != 2 or vectors.shape[1] != basis.shape[1]:
        raise ValueError(
            f"need vectors [n, d] and basis [k, d]; got {tuple(vectors.shape)}, {tuple(basis.shape)}"
        )
    basis = basis.double()
    if len(vectors) == 0:
        return torch.zeros(0, len(basis), dtype=torch.float64), torch.zeros(0, dtype=torch.float64), 0.0
    unit = vectors.double() / vectors.double().norm(dim=1, keepdim=True).clamp(min=1e-12)
    cos = unit @ basis.T
    spanning, singular, _ = torch.linalg.svd(unit.T, full_matrices=False)
    spanning = spanning[:, singular > 1e-6 * singular.max()]  # an orthonormal basis of their span
    coverage = float((basis @ spanning).pow(2).sum() / len(basis))
    return cos, cos.norm(dim=1), coverage


def _mi_ranks(mi: Tensor) -> Tensor:
    """rank [d_sae] of each feature by decreasing MI (0 = highest; ties by index, as SpARE walks)."""
    order = torch.from_numpy(decreasing_mi(mi))
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    return ranks


def planted_alignment(
    spec: OrganismSpec, saes: Mapping[str, Any], selections: Mapping[str, Mapping[str, Selection]]
) -> dict[str, Any]:
    """What results.json records about SpARE's features on a planted organism.

    `selections`: {condition: {site: Selection}} of the chosen settings. For the planted site
    (`L{layer}.resid_post`), if it has an SAE: each planted direction's best-aligned dictionary
    feature (cosine, MI rank, selected or not, by condition); and for each condition, every
    selected feature at that site (group S_C / S_M, MI rank, cosine with each planted direction and
    with the option span) and the share of the option span the selected features cover. Features
    selected at other sites are counted only, since the directions are planted at one site.
    """
    assert spec.planted is not None
    site = f"L{spec.planted.layer}.resid_post"
    directions = planted_directions(spec)
    report: dict[str, Any] = {
        "site": site,
        "margin": spec.planted.margin,
        "directions": list(DIRECTION_NAMES),
    }
    if site not in saes:
        report["note"] = f"no SAE at {site}: SpARE's layer sets do not include the planted layer"
        return report
    decoder = sae_parts(saes[site]).W_dec.detach().float()
    cos_all, _, _ = subspace_alignment(decoder, directions)
    any_selection = next((by_site[site] for by_site in selections.values() if site in by_site), None)
    ranks = _mi_ranks(any_selection.mi) if any_selection is not None else None
    report["best_features"] = {
        name: {
            "feature": int(cos_all[:, i].argmax()),
            "cos": float(cos_all[:, i].max()),
            "mi_rank": None if ranks is None else int(ranks[cos_all[:, i].argmax()]),
        }
        for i, name in enumerate(DIRECTION_NAMES)
    }
    report["conditions"] = {}
    for condition, by_site in selections.items():
        other_sites = {s: len(sel.S_C) + len(sel.S_M) for s, sel in by_site.items() if s != site}
        if site not in by_site:
            report["conditions"][condition] = {"features": [], "other_sites": other_sites}
            continue
        selection = by_site[site]
        chosen = [(int(f), "S_C") for f in selection.S_C] + [(int(f), "S_M") for f in selection.S_M]
        ids = torch.tensor([f for f, _ in chosen], dtype=torch.long)
        cos, cos_span, coverage = subspace_alignment(decoder[ids], directions[:N_OPTIONS])
        flag_cos = decoder[ids].double() @ directions[N_OPTIONS].double() / decoder[ids].double().norm(dim=1)
        ranks = _mi_ranks(selection.mi)
        report["conditions"][condition] = {
            "features": [
                {
                    "feature": feature,
                    "group": group,
                    "mi_rank": int(ranks[feature]),
                    **{f"cos_{name}": float(cos[j, i]) for i, name in enumerate(DIRECTION_NAMES[:N_OPTIONS])},
                    f"cos_{DIRECTION_NAMES[N_OPTIONS]}": float(flag_cos[j]),
                    "cos_option_span": float(cos_span[j]),
                }
                for j, (feature, group) in enumerate(chosen)
            ],
            "option_span_coverage": coverage,
            "other_sites": other_sites,
        }
    return report


def planted_edits(spec: OrganismSpec) -> dict[str, dict[str, Edit]]:
    """{direction: {site: edit}}: the planted mechanism's own switch toward each source (context,
    memory): the option directions set to that source's code at the last prompt token."""
    assert spec.planted is not None
    site = f"L{spec.planted.layer}.resid_post"
    return {name: {site: option_edit(spec, i)} for i, name in enumerate(DIRECTION_NAMES[:N_OPTIONS])}


def planted_summary(report: dict[str, Any]) -> str:
    """One line for a run's summary: the best-aligned features and how the selections align."""
    if "best_features" not in report:
        return f"planted directions at {report['site']}: {report['note']}"
    best = ", ".join(
        f"{name} feature {b['feature']} cos {b['cos']:.2f} (MI rank {b['mi_rank']})"
        for name, b in report["best_features"].items()
    )
    chosen = "; ".join(
        f"{condition}: {len(c['features'])} features at {report['site']}"
        + (
            f", cos with the option span {min(f['cos_option_span'] for f in c['features']):.2f}-"
            f"{max(f['cos_option_span'] for f in c['features']):.2f}, span covered {c['option_span_coverage']:.2f}"
            if c["features"]
            else ""
        )
        for condition, c in report["conditions"].items()
    )
    edit = ", ".join(
        f"{name} EM_C {rates['em_c']:.3f} EM_M {rates['em_m']:.3f}"
        for name, rates in report.get("held_out_planted_edit", {}).items()
    )
    return f"planted directions at {report['site']}: best features {best}; selected {chosen}; planted edit held out: {edit}"
