import pytest
import torch

from steerscope.errors import InputError
from steerscope.probes.linear_probe import average_precision, probe_metrics, roc_auc, train_probe


def test_probe_on_separable_data_reaches_accuracy_one():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=g)
    direction = torch.randn(16, generator=g)
    y = (x @ direction > 0).long()
    x = x + 0.5 * torch.sign(x @ direction)[:, None] * direction  # widen the margin
    probe = train_probe(x[:150], y[:150])
    metrics = probe_metrics(probe, x[150:], y[150:])
    assert metrics == {"acc": 1.0, "auc": 1.0, "auprc": 1.0}


def test_probe_on_random_labels_is_near_chance_on_held_out_data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 8, generator=g)
    y = torch.randint(0, 2, (400,), generator=g)
    metrics = probe_metrics(train_probe(x[:300], y[:300]), x[300:], y[300:])
    assert 0.3 < metrics["acc"] < 0.7 and 0.3 < metrics["auc"] < 0.7


def test_auc_and_average_precision_on_hand_examples():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.1])
    y = torch.tensor([1, 0, 1, 0])
    assert roc_auc(scores, y) == pytest.approx(0.75)  # pairs: (0.9>0.8, 0.9>0.1, 0.7<0.8, 0.7>0.1)
    assert average_precision(scores, y) == pytest.approx((1 / 1 + 2 / 3) / 2)


def test_probe_rejects_one_class():
    with pytest.raises(InputError, match="both labels"):
        train_probe(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
