"""A reusable linear probe: logistic regression on activations, with the metrics probing papers
report (accuracy, ROC AUC, average precision / AUPRC)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from steerscope.errors import InputError


@dataclass(frozen=True)
class LinearProbe:
    """w . standardise(x) + b > 0 predicts label 1. `mean`, `std`, `weight` [d]; `bias` scalar."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def scores(self, x: Tensor) -> Tensor:
        """Logits [n] for activations x [n, d]."""
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias

    @property
    def direction(self) -> Tensor:
        """[d]: the weights on raw activations (`weight / std`), the direction the probe reads."""
        return self.weight / self.std


def train_probe(x: Tensor, y: Tensor, l2: float = 1e-3, steps: int = 200) -> LinearProbe:
    """Fit L2-regularised logistic regression on x [n, d], y [n] in {0, 1} with L-BFGS (float64)."""
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise InputError(f"expected x [n, d] and y [n], got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(torch.unique(y)) != 2:
        raise InputError("a probe needs examples of both labels")
    x, y = x.double(), y.double()
    mean, std = x.mean(0), x.std(0).clamp(min=1e-8)
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def loss() -> Tensor:
        optimiser.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, y)
        value = value + l2 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimiser.step(loss)
    return LinearProbe(mean, std, weight.detach(), bias.detach())


def roc_auc(scores: Tensor, y: Tensor) -> float:
    """Probability that a random positive outscores a random negative (ties count half)."""
    pos, neg = scores[y == 1], scores[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().mean()
    ties = (pos[:, None] == neg[None, :]).double().mean()
    return (greater + 0.5 * ties).item()


def average_precision(scores: Tensor, y: Tensor) -> float:
    """Area under the precision-recall curve as average precision over the positives' ranks."""
    order = torch.argsort(scores, descending=True)
    hits = y[order].double()
    if hits.sum() == 0:
        return float("nan")
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return (precision * hits).sum().item() / hits.sum().item()


class Scorer(Protocol):
    """A probe: logits [n] for inputs x [n, d] (a `LinearProbe`, or a sparse one reading a few columns)."""

    def scores(self, x: Tensor) -> Tensor: ...


def probe_metrics(probe: Scorer, x: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy, AUC and AUPRC of a probe on held-out x [n, d], y [n]."""
    scores = probe.scores(x)
    return {
        "acc": ((scores > 0).long() == y.long()).double().mean().item(),
        "auc": roc_auc(scores, y),
        "auprc": average_precision(scores, y),
    }
