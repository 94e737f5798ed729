"""SpARE's features against known directions: the geometry and the report on a planted organism."""

from __future__ import annotations

import pytest
import torch

from steerscope.experiments.spare.planted import planted_alignment
from steerscope.organisms import organism_spec
from steerscope.organisms.planted import cosines, planted_directions, planted_site
from steerscope.steering.sae import to_sae_lens
from steerscope.steering.spare import Selection

SPEC = organism_spec("sources-planted")
SITE = planted_site(SPEC)


def test_cosines_are_per_vector_and_direction_whatever_the_vectors_norm() -> None:
    directions = torch.eye(4)[:2]
    got = cosines(torch.tensor([[3.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 2]]), directions)
    assert torch.allclose(got, torch.tensor([[1.0, 0], [0, 0.5**0.5], [0, 0]], dtype=torch.float64))


def _sae_with_planted_features(features: dict[int, torch.Tensor], d_sae: int = 64) -> object:
    """A sae-lens SAE whose listed features decode along the given directions (the rest random)."""
    generator = torch.Generator().manual_seed(0)
    d_model = SPEC.shape.d_model
    w_dec = torch.randn(d_sae, d_model, generator=generator)
    for feature, direction in features.items():
        w_dec[feature] = direction
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    weights = {
        "W_enc": w_dec.T.clone(),
        "b_enc": torch.zeros(d_sae),
        "W_dec": w_dec,
        "b_dec": torch.zeros(d_model),
        "threshold": torch.tensor(0.0),
    }
    return to_sae_lens(weights)


def _selection(s_c: list[int], s_m: list[int], mi: torch.Tensor) -> Selection:
    d_sae = len(mi)
    ones, zeros = torch.ones(d_sae), torch.zeros(d_sae)
    return Selection(torch.tensor(s_c), torch.tensor(s_m), ones, ones, mi, zeros, 2, "test", 0.1)


def test_planted_alignment_finds_the_planted_features_and_where_selection_put_them() -> None:
    context, memory, conflict = planted_directions(SPEC)
    sae = _sae_with_planted_features(
        {5: context, 9: 2 * memory + 0.1 * conflict, 12: conflict, 20: memory - context}
    )
    mi = torch.zeros(64)
    mi[9], mi[5], mi[30] = 0.7, 0.6, 0.5  # MI ranks: 9 first, 5 second, 30 third
    report = planted_alignment(
        SPEC,
        {SITE: sae},
        {
            "spare_to_context": _selection([5], [9], mi),
            "spare_to_memory": _selection([30], [], mi),
            "other": None,
        },
    )
    best = report["best_features"]
    assert (best["context"]["feature"], best["memory"]["feature"], best["conflict"]["feature"]) == (5, 9, 12)
    assert best["memory_minus_context"]["feature"] == 20  # the contrast, not either direction alone
    assert best["memory_minus_context"]["cos"] == pytest.approx(1.0, abs=1e-5)
    assert best["context_minus_memory"]["cos"] < 0.8 and best["memory"]["cos"] > 0.99
    assert best["context"]["cos"] == pytest.approx(1.0, abs=1e-5)
    assert (best["context"]["mi_rank"], best["memory"]["mi_rank"]) == (1, 0)
    to_context = report["selected"]["spare_to_context"]
    assert [(f["feature"], f["group"], f["mi_rank"]) for f in to_context] == [(5, "S_C", 1), (9, "S_M", 0)]
    assert to_context[1]["cos_memory"] == pytest.approx(2 / 4.01**0.5, abs=1e-5)
    assert to_context[1]["cos_option_span"] == pytest.approx(2 / 4.01**0.5, abs=1e-5)
    assert report["selected"]["spare_to_memory"][0]["cos_option_span"] < 0.5  # a random feature
    assert report["selected"]["other"] == []


def test_planted_alignment_says_when_the_planted_layer_has_no_sae() -> None:
    report = planted_alignment(SPEC, {"L3.resid_post": None}, {})
    assert "no SAE at" in report["note"]
