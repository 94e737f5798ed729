"""SAE training, caching, save/load and quality metrics (steerscope.steering.sae)."""

from __future__ import annotations

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from steerscope.data.defaults import suite_for
from steerscope.organisms import ORGANISM_ATTRIBUTE, sources_world
from steerscope.steering import sae as sae_module
from steerscope.steering.sae import (
    SAETrainSettings,
    encode_pre,
    load_sae,
    sae_quality,
    save_sae,
    split_holdout,
    train_sae,
    train_saes,
)

FAST = SAETrainSettings(expansion=2, k=4, steps=5, batch_size=64)


def planted_activations(n: int, d: int = 16, m: int = 32, active: int = 2, seed: int = 0) -> torch.Tensor:
    """n vectors [n, d]: each a sum of `active` of m fixed unit directions, plus a large offset."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(m, d, generator=generator), dim=-1)
    chosen = torch.rand(n, m, generator=generator).argsort(-1)[:, :active]
    codes = torch.zeros(n, m).scatter_(1, chosen, 1 + torch.rand(n, active, generator=generator))
    return codes @ directions * 30 + 200 * torch.randn(d, generator=generator)


def identity_sae(d: int, b_dec: torch.Tensor | None = None, w_dec_scale: float = 1.0) -> JumpReLUSAE:
    """A JumpReLU SAE with W_enc = I, W_dec = scale * I, zero biases and thresholds."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d) * w_dec_scale)
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.zeros(d) if b_dec is None else b_dec)
        sae.threshold.zero_()
    return sae


def test_training_on_planted_sparse_structure_reaches_low_fvu() -> None:
    acts = planted_activations(8000)
    train, held_out = split_holdout(acts, 0.1, seed=0)
    settings = SAETrainSettings(expansion=4, k=3, steps=150, batch_size=256, lr=3e-3)
    sae = train_sae(train, settings)
    quality = sae_quality(sae, held_out)
    assert isinstance(sae, JumpReLUSAE)
    assert quality["fvu"] < 0.25
    assert quality["l0"] < 6


def test_save_load_round_trip_preserves_outputs(tmp_path) -> None:
    acts = planted_activations(600)
    sae = train_sae(acts, FAST)
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert (tmp_path / "sae" / "cfg.json").is_file()
    assert type(SAE.load_from_disk(tmp_path / "sae")) is type(sae)
    torch.testing.assert_close(loaded.encode(acts[:50]), sae.encode(acts[:50]), rtol=0, atol=0)
    torch.testing.assert_close(loaded(acts[:50]), sae(acts[:50]), rtol=0, atol=0)


def test_cache_reuse_second_call_does_not_retrain(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    texts = sae_module.training_texts(tiny_llama, sources_world.generic_texts(), n_windows=4, window=24)
    assert len(texts) == 4
    first = train_saes(tiny_llama, ["L1.resid_post"], FAST, [*texts, "a task prompt"])
    assert first["L1.resid_post"].built
    assert first["L1.resid_post"].folder.parent == tmp_path / "sae"

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(sae_module, "train_sae", no_training)
    second = train_saes(tiny_llama, ["L1.resid_post"], FAST, [*texts, "a task prompt"])
    assert not second["L1.resid_post"].built
    torch.testing.assert_close(second["L1.resid_post"].sae.W_enc, first["L1.resid_post"].sae.W_enc)
    report = second["L1.resid_post"].report
    assert {"fvu", "l0", "train_seconds", "held_out_tokens"} <= set(report)


def test_fvu_is_zero_for_perfect_reconstruction_and_one_for_the_mean() -> None:
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert sae_quality(identity_sae(3), x) == {"fvu": 0.0, "l0": 7 / 4}
    mean_only = identity_sae(3, b_dec=x.mean(0), w_dec_scale=0.0)
    assert sae_quality(mean_only, x)["fvu"] == pytest.approx(1.0)


def test_encode_pre_is_the_sae_activation_for_trained_saes() -> None:
    acts = planted_activations(600)
    sae = train_sae(acts, FAST)
    torch.testing.assert_close(encode_pre(sae, acts[:40]), sae.encode(acts[:40]), rtol=1e-5, atol=1e-5)
    assert (encode_pre(identity_sae(2), torch.tensor([[-1.0, 2.0]])) == torch.tensor([[0.0, 2.0]])).all()


def test_loading_a_pretrained_release_offline_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="offline"):
        load_sae("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")


def test_organism_training_texts_are_windows_of_its_own_generic_paragraphs(tiny_llama) -> None:
    setattr(tiny_llama.hf.config, ORGANISM_ATTRIBUTE, "sources_world")
    texts = sae_module.training_texts(
        tiny_llama, suite_for(tiny_llama).text.texts(), n_windows=6, window=10_000
    )
    paragraphs = sources_world.generic_texts()
    assert len(texts) == 6
    assert all(any(p.startswith(t) for p in paragraphs) for t in texts)
