"""Where the entries of per-matrix weight masks sit: per layer and matrix kind, and for query and
key projections, which rotary pair each masked row feeds (rotate-half: pair i = dims i, i + d/2)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from steerscope.anatomy import Anatomy


def counts_by_layer_and_kind(anatomy: Anatomy, masks: Mapping[str, Tensor]) -> dict[str, list[int]]:
    """{kind: [masked count per layer]} for the seven linear maps."""
    table = {kind: [0] * anatomy.n_layers for kind, _ in anatomy.family.linears}
    for (layer, kind), name in anatomy.linear_weights().items():
        if name in masks:
            table[kind][layer] = int(masks[name].sum())
    return table


def rotary_pair_counts(anatomy: Anatomy, masks: Mapping[str, Tensor]) -> dict[str, list[int]]:
    """{"q": counts per rotary pair, "k": ...}: masked entries of q_proj / k_proj rows, by the pair
    of head dims their output row feeds, summed over layers and heads (frequency order: pair 0 is
    the fastest-rotating)."""
    pairs = anatomy.n_rotary_pairs
    totals = {"q": torch.zeros(pairs, dtype=torch.long), "k": torch.zeros(pairs, dtype=torch.long)}
    for (_, kind), name in anatomy.linear_weights().items():
        if kind in totals and name in masks:
            rows = masks[name].sum(dim=1)  # masked entries per output row
            per_dim = rows.view(-1, anatomy.head_dim).sum(0)  # summed over heads
            totals[kind] += per_dim[:pairs] + per_dim[pairs:]
    return {kind: counts.tolist() for kind, counts in totals.items()}
