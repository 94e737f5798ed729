"""conflict-probe against a known answer: on an organism with planted directions
(`steerscope.organisms.planted`), where along the layers the dense residual probe reads the planted
conflict flag.

Per layer, on the probe's splits by fact: the held-out AUC of the flag projection alone (is the
planted code there, on these facts?) and the cosine of the probe's direction (its weights on raw
activations) with the flag and with the option plane (does the probe read the planted code or
something else?). A probe that separates the prompts while its direction misses the flag found
another signal; a flag that does not separate them is a mechanism absent on these facts.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from steerscope.model import ModelLike
from steerscope.organisms.planted import (
    FLAG,
    N_OPTIONS,
    cosines,
    planted_directions,
    planted_site,
    planted_spec,
)
from steerscope.probes.linear_probe import roc_auc, train_probe
from steerscope.sites import Site


def planted_readout(
    model: ModelLike, acts: Any, labels: torch.Tensor, splits: list[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, Any] | None:
    """{"site", "layers": [{layer, flag_auc, probe_cos_flag, probe_cos_options}]} per resid_post
    layer (means over the splits), or None when `model` has no planted directions."""
    spec = planted_spec(model)
    if spec is None:
        return None
    directions = planted_directions(spec)
    rows = []
    for layer in range(model.anatomy.n_layers):
        x = acts[Site(layer, "resid_post")]
        flag_auc, cos_flag, cos_options = [], [], []
        for train, test in splits:
            flag_auc.append(roc_auc(x[test] @ directions[FLAG], labels[test]))
            cos = cosines(train_probe(x[train], labels[train]).direction[None], directions)[0]
            cos_flag.append(float(cos[FLAG]))
            cos_options.append(float(cos[:N_OPTIONS].norm()))
        rows.append(
            {
                "layer": layer,
                "flag_auc": statistics.fmean(flag_auc),
                "probe_cos_flag": statistics.fmean(cos_flag),
                "probe_cos_options": statistics.fmean(cos_options),
            }
        )
    return {"site": planted_site(spec), "direction": "conflict", "layers": rows}
