"""`steerscope build sae:SITE[,SITE...]`: SAEs into the cache from the command line."""

from __future__ import annotations

from pathlib import Path

from steerscope.cli import main
from steerscope.steering import sae as sae_module
from steerscope.steering.sae import SAETrainSettings

SMALL = SAETrainSettings(
    expansion=2, k=4, epochs=2.0, batch_size=128, context=24, max_tokens=None, ce_windows=2
)


DATA = Path(__file__).parent / "data"


def small_settings(train_saes):
    """`train_saes` with the SMALL settings whatever the caller asks."""
    return lambda model, sites, settings, texts: train_saes(model, sites, SMALL, texts, progress=False)


def test_build_sae_prints_each_site_quality_and_caches_it(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    texts = [f"Line {i}: the {'cat' if i % 3 else 'dog'} sat on mat number {i * 7}." for i in range(150)]
    monkeypatch.setattr(sae_module, "training_texts", lambda suite: texts)
    monkeypatch.setattr(sae_module, "train_saes", small_settings(sae_module.train_saes))
    assert main(["build", "sae:L1.resid_post,L2.resid_post", "--model", "tiny:llama"]) == 0
    out = capsys.readouterr().out
    for site in ("L1.resid_post", "L2.resid_post"):
        assert f"{site}: {tmp_path / 'sae'}" in out
    assert out.count("CE loss recovered") == 2 and "FVU" in out and "dead" in out
    assert len([p for p in (tmp_path / "sae").iterdir() if p.is_dir()]) == 2


def test_build_sae_rejects_a_site_that_is_not_residual_width(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))

    def no_texts(suite):
        raise AssertionError("texts assembled before the sites were checked")

    monkeypatch.setattr(sae_module, "training_texts", no_texts)
    assert main(["build", "sae:L1.q_rope", "--model", "tiny:llama"]) == 2
    assert "residual-width sites (resid_pre, resid_post, attn_out, mlp_out)" in capsys.readouterr().err
    assert main(["build", "sae:", "--model", "tiny:llama"]) == 2
    assert "non-empty list of sites" in capsys.readouterr().err


def test_build_sae_trains_on_the_users_text_and_conflicts(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    assembled, assemble = [], sae_module.training_texts

    def training_texts(suite):
        assembled.append(suite)
        return assemble(suite)

    monkeypatch.setattr(sae_module, "training_texts", training_texts)
    monkeypatch.setattr(sae_module, "train_saes", small_settings(sae_module.train_saes))
    text, conflicts = str(DATA / "text.txt"), str(DATA / "conflicts.jsonl")
    argv = ["build", "sae:L1.resid_post", "--model", "tiny:llama", "--data", f"text={text}"]
    assert main([*argv, "--data", f"conflicts={conflicts}"]) == 0
    (suite,) = assembled
    assert (suite.text.source, suite.conflicts.source) == (text, conflicts)
    assert "L1.resid_post" in capsys.readouterr().out
    assert main([*argv, "--data", f"tom={DATA / 'tom.jsonl'}"]) == 2
    assert "build sae: takes text and conflicts data, not tom" in capsys.readouterr().err
