"""SpARE against a known answer: on an organism with planted directions
(`steerscope.organisms.planted`), how the SAE features SpARE selects at the planted site align with
the directions that carry the choice.

Besides the selected features, each planted direction's best-aligned feature of the whole
dictionary is reported with its MI rank, so a failure can be placed: no feature along the
direction (the SAE), one that MI ranks low (the selection), or one selected whose edit does not
move answers (the edit).

At the planted token the option code is one-hot (`margin` on exactly one option direction), so
across the prompts SpARE reads the residual moves along context - memory only: a feature that
captures that contrast has a cosine of at most 1/sqrt(2) with either option direction alone. So
the contrasts `context_minus_memory` and `memory_minus_context` ((d_C - d_M) / sqrt(2) and its
negative) are read out beside the three planted directions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from steerscope.experiments.spare.phases import DevChoice, Features
from steerscope.kernels.sae_edit import sae_parts
from steerscope.model import ModelLike
from steerscope.organisms import OrganismSpec
from steerscope.organisms.planted import N_OPTIONS, cosines, planted_directions, planted_site, planted_spec
from steerscope.steering.spare import Selection, decreasing_mi

#: The planted directions by row of `planted_directions`, named as on organism:sources-planted,
#: then the two signs of the option contrast (`readout_directions`).
DIRECTION_NAMES = ("context", "memory", "conflict", "context_minus_memory", "memory_minus_context")


def readout_directions(spec: OrganismSpec) -> Tensor:
    """[5, d_model] unit rows named by `DIRECTION_NAMES`: the planted directions, then the option
    contrast (d_C - d_M) / sqrt(2) and its negative."""
    planted = planted_directions(spec)
    contrast = (planted[0] - planted[1]) / 2**0.5
    return torch.cat([planted, contrast[None], -contrast[None]])


def _mi_ranks(mi: Tensor) -> Tensor:
    """[d_sae]: each feature's rank by decreasing MI (0 = highest; ties by index, as SpARE walks)."""
    order = torch.from_numpy(decreasing_mi(mi))
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(len(order))
    return ranks


def planted_alignment(
    spec: OrganismSpec, saes: Mapping[str, Any], selections: Mapping[str, Selection | None]
) -> dict[str, Any]:
    """What results.json records about SpARE's features on a planted organism.

    `selections`: {condition: the Selection at the planted site (`L{layer}.resid_post`), or None
    when the condition edits other layers only}. If the site has an SAE: each planted direction's
    best-aligned dictionary feature (cosine, MI rank), and per condition every selected feature
    (group S_C / S_M, MI rank, cosine with each of `DIRECTION_NAMES`, and `cos_option_span`, the
    norm of its cosines with the two option directions). `planted_site` refuses a spec without planted
    directions.
    """
    site = planted_site(spec)
    report: dict[str, Any] = {"site": site, "directions": list(DIRECTION_NAMES)}
    if site not in saes:
        report["note"] = f"no SAE at {site}: the layer sets do not include the planted layer"
        return report
    cos_all = cosines(sae_parts(saes[site]).W_dec.detach(), readout_directions(spec))
    some = next((sel for sel in selections.values() if sel is not None), None)
    ranks = None if some is None else _mi_ranks(some.mi)  # MI is per site, the same for every p
    best = cos_all.argmax(0)
    report["best_features"] = {
        name: {
            "feature": int(best[i]),
            "cos": float(cos_all[best[i], i]),
            "mi_rank": None if ranks is None else int(ranks[best[i]]),
        }
        for i, name in enumerate(DIRECTION_NAMES)
    }
    report["selected"] = {}
    for condition, selection in selections.items():
        chosen = [] if selection is None else [(int(f), "S_C") for f in selection.S_C]
        chosen += [] if selection is None else [(int(f), "S_M") for f in selection.S_M]
        report["selected"][condition] = [
            {
                "feature": feature,
                "group": group,
                "mi_rank": int(ranks[feature]) if ranks is not None else None,
                **{f"cos_{name}": float(cos_all[feature, i]) for i, name in enumerate(DIRECTION_NAMES)},
                "cos_option_span": float(cos_all[feature, :N_OPTIONS].norm()),
            }
            for feature, group in chosen
        ]
    return report


def planted_results(model: ModelLike, features: Features, chosen: DevChoice) -> dict[str, Any]:
    """{"planted": `planted_alignment` of the held-out SpARE edits' selections}, or {} when `model`
    has no planted directions (what `spare` adds to its results)."""
    spec = planted_spec(model)
    if spec is None:
        return {}
    layer = spec.planted.layer
    selections = {
        f"spare_to_{d}": features.selections[row["p"]][planted_site(spec)] if layer in row["layers"] else None
        for d, row in chosen.spare.items()
    }
    return {"planted": planted_alignment(spec, features.saes, selections)}
