"""The k-sparse probe on SAE codes (steerscope.probes.sparse_probe) finds the features that carry a
planted label and nothing it cannot see."""

import pytest
import torch

from steerscope.errors import InputError
from steerscope.probes.linear_probe import probe_metrics
from steerscope.probes.sparse_probe import top_activating, train_sparse_probe


def planted_codes(n: int = 160, d: int = 300, carriers: tuple[int, ...] = (123,), seed: int = 0):
    """Sparse non-negative codes [n, d] and alternating labels [n]: every feature is noise except
    `carriers`, which fire mostly on label 1."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    codes = torch.relu(torch.randn(n, d, generator=g) - 1.5)
    for feature in carriers:
        codes[:, feature] = torch.relu(y + 0.4 * torch.randn(n, generator=g))
    return codes, y


@pytest.mark.parametrize("selection", ["l1", "mi"])
def test_the_sparse_probe_selects_the_feature_that_carries_the_label(selection):
    codes, y = planted_codes()
    probe = train_sparse_probe(codes[:100], y[:100], k=4, selection=selection)
    assert 123 in probe.features.tolist() and len(probe.features) <= 4
    assert probe.weights()[0][0] == 123 and probe.weights()[0][1] > 0  # the largest weight, toward label 1
    metrics = probe_metrics(probe, codes[100:], y[100:])
    assert metrics["acc"] > 0.8 and metrics["auc"] > 0.85


@pytest.mark.parametrize("selection", ["l1", "mi"])
def test_features_that_never_fire_are_never_chosen(selection):
    codes, y = planted_codes(n=60, d=200, carriers=())  # no signal anywhere
    codes[:, 100:] = 0.0  # half the features never fire on these prompts
    probe = train_sparse_probe(codes, y, k=8, selection=selection)
    assert len(probe.features) > 0 and all(f < 100 for f in probe.features.tolist())


def test_without_any_varying_feature_the_probe_uses_none_and_predicts_one_class():
    codes = torch.zeros(20, 30)
    y = torch.arange(20) % 2
    probe = train_sparse_probe(codes, y, k=3)
    assert probe.features.tolist() == [] and probe_metrics(probe, codes, y)["auc"] == 0.5


def test_top_activating_rows_are_the_largest_and_skip_rows_where_the_feature_is_off():
    codes = torch.zeros(6, 3)
    codes[:, 1] = torch.tensor([0.5, 0.0, 2.0, 1.0, 0.0, 0.0])
    assert top_activating(codes, 1, 2) == [(2, 2.0), (3, 1.0)]
    assert [row for row, _ in top_activating(codes, 1, 5)] == [2, 3, 0]


def test_sparse_probe_rejects_bad_inputs():
    codes, y = planted_codes(n=10, d=5, carriers=(2,))
    with pytest.raises(InputError, match="k >= 1"):
        train_sparse_probe(codes, y, k=0)
    with pytest.raises(InputError, match="unknown feature selection 'lasso'; valid: l1, mi"):
        train_sparse_probe(codes, y, k=2, selection="lasso")
    with pytest.raises(InputError, match="both labels"):
        train_sparse_probe(codes, torch.zeros(10, dtype=torch.long), k=2)
