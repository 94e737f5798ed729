"""Build steering vectors from contrast data: difference of means, PCA of paired differences,
and a layer sweep scoring each candidate layer on held-out pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from steerscope.capture import capture
from steerscope.errors import InputError
from steerscope.model import ModelLike, as_model
from steerscope.sites import Site, resolve_sites
from steerscope.steering.vector import Fingerprint, SteeringVector

#: A contrast example: a prompt, or a (prompt, completion) pair whose completion tokens are used.
Example = str | tuple[str, str]
TokenReduction = Literal["last", "mean", "completion_mean"]
REDUCTIONS = ("last", "mean", "completion_mean")


def example_activations(
    model: ModelLike,
    examples: Sequence[Example],
    sites: Sequence[str | Site],
    reduce: TokenReduction = "last",
    batch_size: int = 8,
) -> dict[str, Tensor]:
    """One activation per example and site ([n_examples, d]), reduced over tokens.

    `"last"`: the last prompt token; `"mean"`: all real tokens; `"completion_mean"`: the mean
    over the completion's tokens of (prompt, completion) pairs.
    """
    if reduce not in REDUCTIONS:
        raise InputError(f"unknown reduce {reduce!r}; valid: {', '.join(REDUCTIONS)}")
    loaded = as_model(model)
    pairs = [e if isinstance(e, tuple) else (e, "") for e in examples]
    if reduce != "completion_mean":
        return capture(
            loaded, [p + c for p, c in pairs], sites, reduce=reduce, batch_size=batch_size
        ).activations
    if any(not c for _, c in pairs):
        raise InputError("completion_mean needs (prompt, completion) pairs with non-empty completions")
    full = capture(loaded, [p + c for p, c in pairs], sites, batch_size=batch_size)
    prompt_lengths = torch.tensor([len(loaded.tokenizer(p).input_ids) for p, _ in pairs])
    chosen = (full.positions >= prompt_lengths[:, None]) & full.mask
    weights = chosen.float() / chosen.sum(1, keepdim=True).clamp(min=1)
    return {site: torch.einsum("bs,bsd->bd", weights, act) for site, act in full.activations.items()}


def _contrast(
    model: ModelLike,
    positive: Sequence[Example],
    negative: Sequence[Example],
    sites: str | Site | Sequence[str | Site],
    reduce: TokenReduction,
) -> tuple[Any, list[str], dict[str, Tensor], dict[str, Tensor]]:
    """The model, the site names, and both sets' reduced activations at each site."""
    if not positive or not negative:
        raise InputError(
            f"a contrast needs positive and negative examples, got {len(positive)} and {len(negative)}"
        )
    loaded = as_model(model)
    targets = [str(s) for s in resolve_sites(sites, loaded.anatomy)]
    pos = example_activations(loaded, positive, targets, reduce)
    neg = example_activations(loaded, negative, targets, reduce)
    return loaded, targets, pos, neg


def diff_of_means(
    model: ModelLike,
    positive: Sequence[Example],
    negative: Sequence[Example],
    sites: str | Site | Sequence[str | Site],
    reduce: TokenReduction = "last",
    description: str = "",
    activations: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None,
) -> SteeringVector:
    """mean(positive) - mean(negative) of the activations at each site. `activations`: the
    examples' reduced activations (positive, negative; `example_activations` at these sites or
    more), when already captured for another use: the vector is then the one they give."""
    if activations is None:
        loaded, targets, pos, neg = _contrast(model, positive, negative, sites, reduce)
    else:
        loaded = as_model(model)
        targets = [str(s) for s in resolve_sites(sites, loaded.anatomy)]
        pos, neg = activations
    directions = {site: pos[site].mean(0) - neg[site].mean(0) for site in targets}
    return SteeringVector(
        directions,
        Fingerprint.of(loaded),
        _provenance("diff_of_means", positive, negative, reduce, description),
    )


def pca_of_differences(
    model: ModelLike,
    positive: Sequence[Example],
    negative: Sequence[Example],
    sites: str | Site | Sequence[str | Site],
    reduce: TokenReduction = "last",
    description: str = "",
) -> SteeringVector:
    """First principal direction of the paired differences positive_i - negative_i, signed so
    that it agrees with their mean and scaled to the mean difference's projection."""
    if len(positive) != len(negative) or len(positive) < 2:
        raise InputError("PCA of differences needs paired examples: equal lengths, at least 2 pairs")
    loaded, targets, pos, neg = _contrast(model, positive, negative, sites, reduce)
    directions = {}
    for site in targets:
        diffs = (pos[site] - neg[site]).double()
        first = torch.linalg.svd(diffs, full_matrices=False).Vh[0]
        directions[site] = (first * (diffs.mean(0) @ first)).float()
    return SteeringVector(
        directions,
        Fingerprint.of(loaded),
        _provenance("pca_of_differences", positive, negative, reduce, description),
    )


def _provenance(
    method: str, positive: Sequence[Example], negative: Sequence[Example], reduce: str, description: str
) -> dict:
    return {
        "method": method,
        "reduce": reduce,
        "n_positive": len(positive),
        "n_negative": len(negative),
        "positive_examples": [str(e) for e in positive[:3]],
        "negative_examples": [str(e) for e in negative[:3]],
        "description": description,
    }


def sweep_layers(
    model: ModelLike,
    train: tuple[Sequence[Example], Sequence[Example]],
    heldout: tuple[Sequence[Example], Sequence[Example]],
    layers: Sequence[int] | None = None,
    kind: str = "resid_post",
    reduce: TokenReduction = "last",
) -> list[dict[str, float]]:
    """Score a difference-of-means direction per layer on held-out examples.

    For each layer: `accuracy` of the sign of the projection (relative to the midpoint of the
    training means) at telling positive from negative held-out examples, and `separation`, the
    gap between held-out class means along the unit direction in pooled standard deviations.
    """
    loaded = as_model(model)
    layers = list(range(loaded.anatomy.n_layers)) if layers is None else list(layers)
    sites = [str(Site(layer, kind)) for layer in layers]
    train_acts, held_acts = (
        tuple(example_activations(loaded, examples, sites, reduce) for examples in pair)
        for pair in (train, heldout)
    )
    return score_layers(train_acts, held_acts, layers, kind)


def score_layers(
    train: tuple[dict[str, Tensor], dict[str, Tensor]],
    heldout: tuple[dict[str, Tensor], dict[str, Tensor]],
    layers: Sequence[int],
    kind: str = "resid_post",
) -> list[dict[str, float]]:
    """`sweep_layers`' scores from reduced activations already captured: (positive, negative)
    [n, d] per site for the training and the held-out examples."""
    scores = []
    for layer in layers:
        site = str(Site(layer, kind))
        mean_p, mean_n = train[0][site].mean(0), train[1][site].mean(0)
        unit = (mean_p - mean_n) / (mean_p - mean_n).norm()
        midpoint = (mean_p + mean_n) / 2 @ unit
        proj_p = heldout[0][site] @ unit - midpoint
        proj_n = heldout[1][site] @ unit - midpoint
        correct = (proj_p > 0).sum() + (proj_n <= 0).sum()
        pooled = torch.cat([proj_p - proj_p.mean(), proj_n - proj_n.mean()]).std().clamp(min=1e-12)
        scores.append(
            {
                "layer": layer,
                "accuracy": (correct / (len(proj_p) + len(proj_n))).item(),
                "separation": ((proj_p.mean() - proj_n.mean()) / pooled).item(),
            }
        )
    return scores
