"""SAE training, the resumable cached build, save/load and quality metrics (steerscope.steering.sae*)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from sae_lens import SAE, JumpReLUSAE, JumpReLUSAEConfig

from steerscope.capture import capture
from steerscope.context import with_user_data
from steerscope.data import docstrings
from steerscope.data.defaults import natural_suite
from steerscope.data.docstrings import python_docstrings
from steerscope.data.user_data import read_user_data
from steerscope.errors import InputError
from steerscope.organisms import sources_world
from steerscope.steering import sae as sae_module
from steerscope.steering import sae_data, sae_training
from steerscope.steering.sae import (
    REPORT,
    SAETrainSettings,
    encode_pre,
    load_sae,
    sae_folder,
    sae_from_activations,
    save_sae,
    train_saes,
    training_texts,
)
from steerscope.steering.sae_data import last_windows, split_windows, token_windows
from steerscope.steering.sae_quality import ce_loss_recovered, sae_quality

DATA = Path(__file__).parent / "data"
FAST = SAETrainSettings(expansion=2, k=4, epochs=1.0, batch_size=64)
TEXTS = [
    "The cat sat on the mat and looked at the dog across the garden. " * 6,
    "Paris is the capital of France, and Rome is the capital of Italy. " * 6,
    *[f"Number {i} is {'even' if i % 2 == 0 else 'odd'}, and {i + 1} follows it." for i in range(120)],
]
BUILD = SAETrainSettings(
    expansion=2, k=4, epochs=3.0, batch_size=128, lr=3e-3, context=24, max_tokens=None, ce_windows=4
)


def planted_activations(n: int, d: int = 16, m: int = 32, active: int = 2, seed: int = 0) -> torch.Tensor:
    """n vectors [n, d]: each a sum of `active` of m fixed unit directions, plus a large offset."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(m, d, generator=generator), dim=-1)
    chosen = torch.rand(n, m, generator=generator).argsort(-1)[:, :active]
    codes = torch.zeros(n, m).scatter_(1, chosen, 1 + torch.rand(n, active, generator=generator))
    return codes @ directions * 30 + 200 * torch.randn(d, generator=generator)


def identity_sae(d: int, b_dec: torch.Tensor | None = None, w_dec_scale: float = 1.0) -> JumpReLUSAE:
    """A JumpReLU SAE with W_enc = [I, -I], W_dec = scale * [I; -I], zero biases and thresholds:
    it reconstructs any vector exactly when scale = 1."""
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=2 * d))
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye]) * w_dec_scale)
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.zeros(d) if b_dec is None else b_dec)
        sae.threshold.zero_()
    return sae


def test_training_on_planted_sparse_structure_reaches_low_fvu() -> None:
    acts = planted_activations(8000)
    settings = SAETrainSettings(expansion=4, k=2, epochs=8.0, batch_size=256, lr=3e-3)
    sae = sae_from_activations(acts[800:], settings)
    quality = sae_quality(sae, acts[:800])
    assert isinstance(sae, JumpReLUSAE)
    assert quality["fvu"] < 0.15
    assert 1.0 < quality["l0"] < 3.0  # the calibrated threshold keeps about k codes per token


def test_save_load_round_trip_preserves_outputs(tmp_path) -> None:
    acts = planted_activations(600)
    sae = sae_from_activations(acts, FAST)
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert (tmp_path / "sae" / "cfg.json").is_file()
    assert type(SAE.load_from_disk(tmp_path / "sae")) is type(sae)
    torch.testing.assert_close(loaded.encode(acts[:50]), sae.encode(acts[:50]), rtol=0, atol=0)
    torch.testing.assert_close(loaded(acts[:50]), sae(acts[:50]), rtol=0, atol=0)


def test_quality_of_a_perfect_and_of_a_mean_only_sae() -> None:
    x = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    assert sae_quality(identity_sae(3), x) == {"fvu": 0.0, "l0": 7 / 4, "dead_fraction": 0.5}
    mean_only = identity_sae(3, b_dec=x.mean(0), w_dec_scale=0.0)
    assert sae_quality(mean_only, x)["fvu"] == pytest.approx(1.0)


def test_ce_loss_recovered_is_one_for_a_perfect_sae_and_zero_for_a_zero_output(tiny_llama) -> None:
    texts = ["The cat sat on the mat.", "Dogs bark at night when the moon is full.", "A short one."]
    d = tiny_llama.anatomy.d_model
    perfect = ce_loss_recovered(tiny_llama, identity_sae(d), "L1.resid_post", texts, batch_size=2)
    assert perfect["ce_zero"] != pytest.approx(perfect["ce_clean"], abs=1e-3)
    assert perfect["ce_sae"] == pytest.approx(perfect["ce_clean"], abs=1e-5)
    assert perfect["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    zero = ce_loss_recovered(tiny_llama, identity_sae(d, w_dec_scale=0.0), "L1.resid_post", texts)
    assert zero["ce_sae"] == pytest.approx(zero["ce_zero"], abs=1e-6)
    assert zero["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)


def test_encode_pre_is_the_sae_activation_for_trained_saes() -> None:
    acts = planted_activations(600)
    sae = sae_from_activations(acts, FAST)
    torch.testing.assert_close(encode_pre(sae, acts[:40]), sae.encode(acts[:40]), rtol=1e-5, atol=1e-5)
    assert (
        encode_pre(identity_sae(2), torch.tensor([[-1.0, 2.0]])) == torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    ).all()


def test_windows_are_distinct_bounded_deterministic_and_capped(tiny_llama) -> None:
    tokenizer = tiny_llama.tokenizer
    windows = token_windows(tokenizer, TEXTS + TEXTS, context=24, max_tokens=None, seed=0)
    lengths = [len(tokenizer(w, add_special_tokens=False).input_ids) for w in windows]
    assert len(set(windows)) == len(windows)  # the repeated texts add nothing
    assert max(lengths) <= 23 and min(lengths) >= sae_data.MIN_WINDOW_TOKENS
    assert token_windows(tokenizer, TEXTS, 24, None, seed=0) == windows
    assert token_windows(tokenizer, TEXTS, 24, None, seed=1) != windows
    capped = token_windows(tokenizer, TEXTS, 24, max_tokens=200, seed=0)
    assert capped == windows[: len(capped)] and 200 <= sum(lengths[: len(capped)]) < 200 + 23


def test_build_caches_each_site_with_its_report(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    first = train_saes(tiny_llama, ["L1.resid_post", "L0.mlp_out"], BUILD, TEXTS, progress=False)
    for site, trained in first.items():
        assert trained.built and trained.folder.parent == tmp_path / "sae"
        report = trained.report
        assert report["site"] == site and report["settings"]["k"] == 4
        assert {"fvu", "l0", "dead_fraction", "ce_loss_recovered", "train_tokens", "held_out_tokens"} <= set(
            report
        )
        assert 0 <= report["fvu"] < 1 and 0 <= report["dead_fraction"] < 1
        assert (trained.folder / REPORT).is_file() and (trained.folder / "cfg.json").is_file()
    assert not list((tmp_path / "sae-work").iterdir())  # shards and checkpoints removed

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(sae_module, "train_batch_topk", no_training)
    second = train_saes(tiny_llama, ["L1.resid_post"], BUILD, TEXTS, progress=False)
    assert not second["L1.resid_post"].built
    torch.testing.assert_close(second["L1.resid_post"].sae.W_enc, first["L1.resid_post"].sae.W_enc)


def test_an_sae_of_last_tokens_trains_on_each_texts_last_token_alone(
    tiny_llama, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    # the SAEs of every position keep the cache key they had before `positions` existed
    assert sae_folder(tiny_llama, "L1.resid_post", BUILD, TEXTS).name == "2d5b60b6dccfc88108cc7898"
    last = replace(BUILD, positions="last", batch_size=16)
    assert sae_folder(tiny_llama, "L1.resid_post", last, TEXTS) != sae_folder(
        tiny_llama, "L1.resid_post", replace(last, positions="all"), TEXTS
    )
    tokenizer = tiny_llama.tokenizer
    windows = last_windows(tokenizer, TEXTS, 24, None, seed=0)
    ends = {tuple(tokenizer(t, add_special_tokens=False).input_ids[-23:]) for t in TEXTS}
    assert {tuple(tokenizer(w, add_special_tokens=False).input_ids) for w in windows} == ends
    seen = {}
    real = sae_module.train_batch_topk

    def recording(acts, *args, **kwargs):
        seen["acts"] = acts
        return real(acts, *args, **kwargs)

    monkeypatch.setattr(sae_module, "train_batch_topk", recording)
    report = train_saes(tiny_llama, ["L1.resid_post"], last, TEXTS, progress=False)["L1.resid_post"].report
    train = split_windows(windows, last.holdout)["train"]
    expected = capture(tiny_llama, train, ["L1.resid_post"], reduce="last", progress=False)["L1.resid_post"]
    torch.testing.assert_close(seen["acts"].float(), expected, atol=0.05, rtol=0.02)  # stored in bf16
    assert report["train_tokens"] == report["train_windows"] == len(train)
    assert report["ce_loss_recovered"] is None  # no token follows a text's last one
    with pytest.raises(InputError, match="positions='last' trains on one token per text"):
        train_saes(tiny_llama, ["L0.resid_post"], replace(last, batch_size=1024), TEXTS, progress=False)
    with pytest.raises(InputError, match="positions must be one of"):
        replace(last, positions="first")


class Killed(Exception):
    """Stands for the process being killed."""


def test_a_killed_build_resumes_and_gives_the_same_sae(tiny_llama, tmp_path, monkeypatch) -> None:
    settings = replace(BUILD, epochs=6.0)
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "uninterrupted"))
    reference = train_saes(tiny_llama, ["L1.resid_post"], settings, TEXTS, progress=False)["L1.resid_post"]
    assert reference.report["steps"] > 100  # long enough to checkpoint at step 100

    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "killed"))
    save_checkpoint, captured = sae_training.save_checkpoint, []

    def killed_after_first_checkpoint(*args, **kwargs):
        save_checkpoint(*args, **kwargs)
        raise Killed

    capture = sae_data.capture

    def killed_after_two_shards(*args, **kwargs):
        if len(captured) == 2:
            raise Killed
        captured.append(args[1])
        return capture(*args, **kwargs)

    monkeypatch.setattr(sae_data, "capture", killed_after_two_shards)
    with pytest.raises(Killed):
        train_saes(tiny_llama, ["L1.resid_post"], settings, TEXTS, progress=False)
    monkeypatch.setattr(sae_data, "capture", capture)
    monkeypatch.setattr(sae_training, "save_checkpoint", killed_after_first_checkpoint)
    with pytest.raises(Killed):
        train_saes(tiny_llama, ["L1.resid_post"], settings, TEXTS, progress=False)
    monkeypatch.setattr(sae_training, "save_checkpoint", save_checkpoint)
    monkeypatch.setattr(sae_data, "capture", killed_after_two_shards)  # resuming must not capture again
    resumed = train_saes(tiny_llama, ["L1.resid_post"], settings, TEXTS, progress=False)["L1.resid_post"]
    assert resumed.report["resumed_from_step"] == 100
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.equal(getattr(resumed.sae, name), getattr(reference.sae, name)), name


def test_bad_sites_and_texts_fail_before_any_work(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="residual-width sites"):
        train_saes(tiny_llama, ["L1.q"], BUILD, TEXTS)
    with pytest.raises(InputError, match="valid"):
        train_saes(tiny_llama, ["L9.resid_post"], BUILD, TEXTS)  # the tiny model has 4 layers
    with pytest.raises(InputError, match="non-empty list of strings"):
        train_saes(tiny_llama, ["L1.resid_post"], BUILD, "one string")
    with pytest.raises(InputError, match="epochs"):
        SAETrainSettings(epochs=0)
    assert not (tmp_path / "sae").exists()


def test_loading_a_pretrained_release_offline_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="offline"):
        load_sae("gemma-scope-2b-pt-res-canonical/layer_12/width_16k/canonical")


def test_organism_texts_are_its_own_paragraphs_and_prompts_without_docstrings(monkeypatch) -> None:
    monkeypatch.setattr(docstrings, "python_docstrings", lambda: ("a docstring",))
    suite = sources_world.suite()
    texts = training_texts(suite)
    paragraphs = suite.text.texts()
    assert texts[: len(paragraphs)] == paragraphs
    prompts = texts[len(paragraphs) :]
    assert len(prompts) == len(set(prompts)) > len(suite.conflicts.candidates(None, 0))
    assert all(p.endswith("answer:") for p in prompts)
    assert "a docstring" not in texts
    assert "a docstring" in training_texts(natural_suite())


def test_a_users_text_and_conflicts_replace_the_defaults_in_the_training_texts(monkeypatch) -> None:
    monkeypatch.setattr(docstrings, "python_docstrings", lambda: ("a docstring",))
    user = {kind: read_user_data(kind, str(DATA / f"{kind}.jsonl")) for kind in ("text", "conflicts")}
    texts = training_texts(with_user_data(natural_suite(), user))
    documents = list(user["text"].records)
    assert texts[: len(documents)] == documents
    prompts = texts[len(documents) :]
    records = user["conflicts"].records
    assert len(prompts) == len(set(prompts)) >= len(records) * 3 * 2  # pushes x conflict or not x seeds
    assert all(any(r.question in p.rsplit("\n\n", 1)[-1] for r in records) for p in prompts)
    assert "a docstring" not in texts  # docstrings pad steerscope's own text only


def test_natural_texts_hold_over_a_million_gemma_tokens(gemma) -> None:
    texts = training_texts(natural_suite())
    assert len(python_docstrings()) > 5000
    n_tokens = sum(len(ids) for ids in gemma.tokenizer(texts, add_special_tokens=False).input_ids)
    assert n_tokens > 1_300_000
