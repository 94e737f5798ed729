"""The organisms' committed weights: verified on load, never trained in a fresh clone, stale when
the recipe changes, reproduced by a rebuild, and each recipe's first steps still giving the
fingerprint committed with its weights."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

import steerscope as ss
from steerscope.cache import cache_root, damage
from steerscope.cli import main
from steerscope.hashing import file_digest
from steerscope.organisms import ORGANISMS, Shape, Training, committed, organism_spec
from steerscope.organisms import train as train_module
from steerscope.organisms.build import organism_folder, recipe_build
from steerscope.organisms.committed import (
    DamagedWeights,
    commit_build,
    committed_folder,
    committed_recipe,
    differing_files,
    recipe_fingerprint,
)

TINY = dataclasses.replace(
    organism_spec("length"),
    name="length-tiny",
    shape=Shape(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_mlp=64),
    training=Training(steps=6, batch_size=8, lr=3e-3, warmup=2, n_task=300, n_filler=60, checkpoint_every=3),
)
REBUILD = "rebuild and commit it: steerscope build organism:{0} --from-recipe --commit"


@pytest.fixture
def tiny_committed(tmp_path, monkeypatch):
    """TINY registered, built from its recipe into a scratch cache and committed into scratch
    weights; the cache is emptied afterwards, so only the committed build is left."""
    monkeypatch.setattr(committed, "WEIGHTS", tmp_path / "weights")
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(ORGANISMS, TINY.name, TINY)
    built, _ = recipe_build(TINY, progress=False)
    commit_build(TINY, built)
    shutil.rmtree(tmp_path / "cache")
    return committed_folder(TINY)


def _refuse_to_train(*args, **kwargs):
    raise AssertionError("an organism with committed weights was trained")


def test_loading_an_organism_reads_its_committed_weights_and_trains_nothing(tiny_committed, monkeypatch):
    monkeypatch.setattr(train_module, "train_organism", _refuse_to_train)
    model = ss.load(f"organism:{TINY.name}")
    assert str(tiny_committed) in model.source
    assert model.anatomy.n_layers == 2
    assert not list(cache_root().glob("organism-*"))


def test_a_damaged_committed_file_fails_naming_it(tiny_committed):
    weights = tiny_committed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DamagedWeights, match="model.safetensors changed"):
        ss.load(f"organism:{TINY.name}")


def test_a_changed_recipe_is_built_from_the_recipe_not_served_stale_weights(tiny_committed, monkeypatch):
    changed = dataclasses.replace(TINY, training=dataclasses.replace(TINY.training, lr=1e-3))
    monkeypatch.setitem(ORGANISMS, TINY.name, changed)
    with pytest.warns(UserWarning, match="trained from recipe .* the recipe is now"):
        folder = organism_folder(TINY.name, progress=False)
    assert folder == changed.folder() and differing_files(changed, folder) == ["model.safetensors"]


def test_a_rebuild_from_the_recipe_reproduces_the_committed_bytes(tiny_committed, tmp_path, capsys):
    assert main(["build", f"organism:{TINY.name}", "--from-recipe"]) == 0
    out = capsys.readouterr().out
    assert (
        "trained from the recipe now" in out
        and "bytes equal to the committed weights (recipe " in out
        and out.rstrip().endswith("yes")
    )
    rebuilt = TINY.folder()
    assert differing_files(TINY, rebuilt) == []
    changed = tmp_path / "changed"
    shutil.copytree(rebuilt, changed)
    (changed / "tokenizer.json").write_text((changed / "tokenizer.json").read_text() + " ")
    assert differing_files(TINY, changed) == ["tokenizer.json"]


def test_build_verifies_committed_weights_and_commit_needs_a_build_from_the_recipe(tiny_committed, capsys):
    assert main(["build", f"organism:{TINY.name}"]) == 0
    assert "committed weights, verified" in capsys.readouterr().out
    assert main(["build", f"organism:{TINY.name}", "--commit"]) == 2
    assert "give --from-recipe with it" in capsys.readouterr().err


# ------------------------------------------------------------ the committed organisms themselves


@pytest.mark.parametrize("name", ORGANISMS)
def test_every_organism_has_intact_committed_weights_of_its_current_recipe(name):
    spec = ORGANISMS[name]
    recipe = committed_recipe(spec)
    assert recipe is not None, f"organism:{name} has no committed weights; {REBUILD.format(name)}"
    assert recipe["recipe"] == spec.digest(), (
        f"organism:{name}'s recipe changed since its weights were committed "
        f"({recipe['recipe'][:12]} -> {spec.digest()[:12]}); {REBUILD.format(name)}"
    )
    assert damage(committed_folder(spec)) is None


@pytest.mark.parametrize("name", ORGANISMS)
def test_the_first_steps_of_each_recipe_reproduce_its_committed_fingerprint(name):
    spec = ORGANISMS[name]
    recipe = committed_recipe(spec)
    assert recipe is not None, f"organism:{name} has no committed weights; {REBUILD.format(name)}"
    fingerprint = recipe_fingerprint(spec)
    assert fingerprint["tokenizer"] == file_digest(committed_folder(spec) / "tokenizer.json")
    assert fingerprint == recipe["first_steps"], (
        f"organism:{name}: its recipe no longer gives the committed corpus, tokenizer or first "
        f"{recipe['first_steps']['steps']} steps (built with {recipe['built_with']}); if the recipe or "
        f"the code it runs changed, {REBUILD.format(name)}"
    )
