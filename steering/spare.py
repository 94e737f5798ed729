"""SpARE: select SAE features by mutual information, then steer between context and memory.

Zhao et al. 2025, "Steering Knowledge Selection Behaviours in LLMs via SAE-Based Representation
Engineering" (arXiv 2410.15999). Given SAE codes z at the last prompt token of prompts where the
model uses the context (C) and where it uses its memory (M):

1. `select_features`: mutual information of each feature with the C/M label; keep the fewest
   top-MI features whose MI sums to a fraction p of the total; a kept feature goes to S_C if its
   mean is higher under C, else to S_M.
2. `spare_edit`: at the last prompt token only, towards memory, remove what S_C holds (up to
   alpha times its C mean) and add the shortfall of S_M (up to alpha times its M mean):
   h' = h - W_dec[S_C]^T min(alpha zbar_C, z) + W_dec[S_M]^T max(alpha zbar_M - z, 0).
   Towards context the roles swap.

Target means are plain means over the prompts of each label (the paper's weighting is not
reproduced here: with no per-prompt weights to cite, every prompt counts once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from steerscope.capture import capture
from steerscope.intervene import Edit
from steerscope.kernels.sae_edit import SubsetEdit, fused_edit, reference_edit, sae_parts
from steerscope.model import ModelLike
from steerscope.steering.sae import encode_pre
from steerscope.tokens import TokenInfo

Direction = Literal["memory", "context"]
DIRECTIONS = ("memory", "context")


@dataclass(frozen=True)
class Selection:
    """Features chosen at one site: S_C, S_M [k_c], [k_m] indices (by decreasing MI); zbar_C,
    zbar_M [d_sae] mean codes over C and M prompts; mi [d_sae] in nats."""

    S_C: Tensor  # noqa: N815 (the paper's names)
    S_M: Tensor  # noqa: N815
    zbar_C: Tensor  # noqa: N815
    zbar_M: Tensor  # noqa: N815
    mi: Tensor


def mutual_information(z: Tensor, labels: Tensor, bins: int = 10) -> Tensor:
    """MI [d_sae] in nats between each feature of z [n, d_sae] and binary labels [n].

    Plug-in estimator: each feature is min-max scaled over the n samples to [0, 1] and cut into
    `bins` equal-width bins; MI = sum_{b,y} p(b,y) log(p(b,y) / (p(b) p(y))) over the empirical
    joint table. A constant feature has MI 0. Vectorised: one [d_sae, bins, 2] count table.
    """
    if z.dim() != 2 or labels.shape != (z.shape[0],):
        raise ValueError(
            f"z must be [n, d_sae] and labels [n]; got {tuple(z.shape)} and {tuple(labels.shape)}"
        )
    z = z.double()
    low, high = z.min(0).values, z.max(0).values
    scaled = (z - low) / (high - low).clamp(min=torch.finfo(z.dtype).tiny)
    binned = (scaled * bins).long().clamp(max=bins - 1)  # [n, d_sae]
    y = labels.long().to(z.device)
    cell = binned * 2 + y[:, None]  # joint cell per sample and feature
    counts = torch.zeros(z.shape[1], bins * 2, dtype=torch.float64, device=z.device)
    counts.scatter_add_(1, cell.T, torch.ones_like(cell.T, dtype=torch.float64))
    joint = (counts / z.shape[0]).view(-1, bins, 2)
    p_bin = joint.sum(2, keepdim=True)
    p_label = joint.sum(1, keepdim=True)
    ratio = joint / (p_bin * p_label).clamp(min=1e-300)
    terms = torch.where(joint > 0, joint * ratio.clamp(min=1e-300).log(), torch.zeros_like(joint))
    return terms.sum((1, 2)).clamp(min=0).float()


def select_features(z_C: Tensor, z_M: Tensor, p: float = 0.1, bins: int = 10) -> Selection:  # noqa: N803
    """SpARE feature selection from codes z_C [n_c, d_sae] and z_M [n_m, d_sae].

    Keeps the smallest set of top-MI features whose MI reaches `p` of the total MI over all
    features, then splits it by which label has the higher mean.
    """
    if not 0 < p <= 1:
        raise ValueError(f"p must be in (0, 1], got {p}")
    if z_C.dim() != 2 or z_M.dim() != 2 or z_C.shape[1] != z_M.shape[1]:
        raise ValueError(
            f"z_C and z_M must be [n, d_sae] with one d_sae; got {tuple(z_C.shape)}, {tuple(z_M.shape)}"
        )
    if len(z_C) == 0 or len(z_M) == 0:
        raise ValueError("select_features needs at least one C and one M prompt")
    z = torch.cat([z_C, z_M]).float()
    labels = torch.cat([torch.ones(len(z_C)), torch.zeros(len(z_M))])
    mi = mutual_information(z, labels, bins)
    order = mi.argsort(descending=True)
    cumulative = mi[order].double().cumsum(0)
    total = cumulative[-1].item()
    n_keep = 0 if total <= 0 else int((cumulative < p * total * (1 - 1e-9)).sum().item()) + 1
    kept = order[:n_keep]
    zbar_C, zbar_M = z_C.float().mean(0), z_M.float().mean(0)  # noqa: N806
    to_context = zbar_C[kept] > zbar_M[kept]
    return Selection(S_C=kept[to_context], S_M=kept[~to_context], zbar_C=zbar_C, zbar_M=zbar_M, mi=mi)


def _roles(selection: Selection, direction: str, alpha: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(remove, add, target_remove, target_add) for a direction."""
    if direction == "memory":
        remove, add, mean_remove, mean_add = selection.S_C, selection.S_M, selection.zbar_C, selection.zbar_M
    elif direction == "context":
        remove, add, mean_remove, mean_add = selection.S_M, selection.S_C, selection.zbar_M, selection.zbar_C
    else:
        raise ValueError(f"unknown direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    return remove, add, alpha * mean_remove[remove], alpha * mean_add[add]


def spare_edit(
    sae: Any, selection: Selection, direction: Direction = "memory", alpha: float = 1.0, fused: bool = True
) -> Edit:
    """The steerscope edit applying SpARE at the last prompt token of each row (other tokens,
    pads and generated tokens untouched). `fused=False` uses the full-SAE reference path."""
    parts = sae_parts(sae)
    remove, add, target_remove, target_add = _roles(selection, direction, alpha)
    subset = SubsetEdit.gather(parts, remove, add, target_remove, target_add)
    moved: dict[tuple, Any] = {}

    def edit(act: Tensor, tokens: TokenInfo) -> Tensor | None:
        chosen = tokens.is_last_prompt
        if not bool(chosen.any()):
            return None
        key = (act.device, act.dtype)
        rows = act[chosen]
        if fused:
            if key not in moved:
                moved[key] = subset.to(act.device, act.dtype)
            new_rows = fused_edit(moved[key], rows)
        else:
            new_rows = reference_edit(parts, rows.float(), remove, add, target_remove, target_add).to(
                act.dtype
            )
        out = act.clone()
        out[chosen] = new_rows
        return out

    return edit


def spare_edits(
    saes_by_site: Mapping[str, Any],
    selections: Mapping[str, Selection],
    direction: Direction = "memory",
    alpha: float = 1.0,
    fused: bool = True,
) -> dict[str, Edit]:
    """{site: edit} for several layers at once, for `steerscope.intervene(model, ...)`."""
    missing = set(selections) - set(saes_by_site)
    if missing:
        raise KeyError(f"no SAE for selected sites {sorted(missing)}; SAEs at: {sorted(saes_by_site)}")
    return {
        site: spare_edit(saes_by_site[site], selection, direction, alpha, fused)
        for site, selection in selections.items()
    }


@torch.no_grad()
def last_token_codes(
    model: ModelLike, saes_by_site: Mapping[str, Any], prompts: list[str]
) -> dict[str, Tensor]:
    """SAE codes z [n_prompts, d_sae] at the last prompt token of each prompt, by site."""
    got = capture(model, prompts, list(saes_by_site), reduce="last", progress=False)
    return {site: encode_pre(sae, got[site]) for site, sae in saes_by_site.items()}
