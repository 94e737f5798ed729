"""Faults a careful user or an attacker can cause: damaged caches, planted or damaged checkpoints,
foreign or edited steering vectors, non-finite or malformed values. Each must be a clear error
before the work, or a detected fault that is repaired with a warning; never a silent wrong result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import steerscope as ss
import steerscope.loading as loading
from steerscope.cache import MANIFEST, cached_folder, damage, is_intact
from steerscope.capture import tokenize, tokenize_for_generate
from steerscope.errors import InputError
from steerscope.hashing import HASH_NAME, file_digest
from steerscope.model import as_model
from steerscope.organisms import ORGANISMS, Shape, Training, organism_spec
from steerscope.organisms.build import organism_folder
from steerscope.organisms.train import LEGACY_CHECKPOINT, build_corpus, train_steps
from steerscope.probes import fisher
from steerscope.probes.fisher import LossSample, cached_fisher_scores
from steerscope.probes.lm_metrics import (
    continuation_logprobs,
    greedy_continuations,
    perplexity,
    top_token_probability,
)
from steerscope.steering import SteeringVector, diff_of_means, steer
from steerscope.steering.apply import steering_edit
from steerscope.steering.vector import Fingerprint
from steerscope.tiny import char_tokenizer, tiny_config, tiny_model

PROMPTS = ["The cat sat", "A dog ran far away"]
REPO = Path(__file__).resolve().parent.parent


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(data)


# ---------------------------------------------------------------- 1. cached artefacts


def _payload(folder: Path) -> None:
    """A 4 MiB file the old sampled digest covered only 4 KiB of, and a small one."""
    (folder / "weights.bin").write_bytes(torch.arange(1 << 20, dtype=torch.int32).numpy().tobytes())
    (folder / "nested").mkdir()
    (folder / "nested" / "notes.txt").write_text("hello")
    os.chmod(folder / "weights.bin", 0o600)  # as save_pretrained leaves model.safetensors


@pytest.mark.parametrize("offset", [0, 1_000_003, 2_097_152 + 4096, (4 << 20) - 4096])
def test_overwriting_4_kib_anywhere_in_a_cached_file_is_detected_and_rebuilt(tmp_path, offset):
    folder, _ = cached_folder(tmp_path / "entry", _payload)
    original = (folder / "weights.bin").read_bytes()
    _overwrite(folder / "weights.bin", offset, b"\x00\x01" * 2048)
    assert damage(folder) == f"weights.bin changed (its {HASH_NAME} differs from the manifest)"
    with pytest.warns(UserWarning, match=re.escape(f"{folder} failed verification (weights.bin changed")):
        assert cached_folder(folder, _payload) == (folder, True)
    assert (folder / "weights.bin").read_bytes() == original and is_intact(folder)


def test_missing_added_or_truncated_files_and_old_manifests_are_damage(tmp_path):
    folder, _ = cached_folder(tmp_path / "entry", _payload)
    (folder / "extra.json").write_text("{}")
    assert damage(folder) == "files missing or added: extra.json"
    (folder / "extra.json").unlink()
    (folder / "nested" / "notes.txt").unlink()
    assert damage(folder) == "files missing or added: nested/notes.txt"
    with pytest.warns(UserWarning, match="nested/notes.txt"):
        cached_folder(folder, _payload)
    (folder / "weights.bin").write_bytes(b"short")
    assert damage(folder) == "weights.bin has 5 bytes, expected 4194304"
    with pytest.warns(UserWarning, match="5 bytes"):
        cached_folder(folder, _payload)
    (folder / MANIFEST).write_text(json.dumps({"files": {"weights.bin": "sampled sha256"}}))
    assert damage(folder) == "manifest of an older format (1)"
    (folder / MANIFEST).write_text("{not json")
    assert damage(folder).startswith("unreadable manifest")


def test_cached_files_are_world_readable_whatever_the_builder_or_umask(tmp_path):
    previous = os.umask(0o077)
    try:
        folder, _ = cached_folder(tmp_path / "entry", _payload)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(folder)): p.stat().st_mode & 0o777 for p in folder.rglob("*")}
    assert modes == {"weights.bin": 0o644, "nested": 0o755, "nested/notes.txt": 0o644, MANIFEST: 0o644}
    assert folder.stat().st_mode & 0o777 == 0o755


@pytest.fixture
def tiny_embedded(tmp_path, monkeypatch):
    """`load()` of the embedded model, with a tiny Llama standing in for Gemma in a fresh cache."""
    builds = []

    def build(folder: Path) -> None:
        model = tiny_model("llama")
        model.hf.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
        builds.append(folder)

    monkeypatch.setattr(loading, "embedded_cache_dir", lambda: tmp_path / "embedded")
    monkeypatch.setattr(loading, "_build_embedded", build)
    return builds


def _logits(model: ss.Model) -> torch.Tensor:
    with torch.no_grad():
        return model.hf(**tokenize(model, PROMPTS)).logits


@pytest.mark.parametrize(
    ("name", "where", "junk"),
    [
        ("model.safetensors", 0.6, b"\x7f" * 4096),  # weights: logits would move silently
        ("tokenizer.json", 0.5, b"\xff\xfe" * 32),  # not UTF-8: UnicodeDecodeError on every load
        ("tokenizer.json", 1.0, b"!"),  # its last byte
    ],
)
def test_damaged_embedded_model_or_tokenizer_is_rebuilt_on_load(tiny_embedded, name, where, junk):
    expected = _logits(ss.load())
    path = loading.embedded_cache_dir() / name
    _overwrite(path, min(int(path.stat().st_size * where), path.stat().st_size - len(junk)), junk)
    with pytest.warns(UserWarning, match=f"failed verification \\({re.escape(name)} changed"):
        reloaded = ss.load()
    assert len(tiny_embedded) == 2
    assert torch.equal(_logits(reloaded), expected)
    assert is_intact(loading.embedded_cache_dir())


@pytest.mark.slow
def test_the_real_embedded_cache_hashes_every_byte_of_every_file(gemma):
    folder = loading.embedded_cache_dir()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["hash"] == HASH_NAME
    assert set(manifest["files"]) == {"config.json", "generation_config.json", "model.safetensors"} | {
        "tokenizer.json",
        "tokenizer_config.json",
    }
    for name, entry in manifest["files"].items():
        assert entry == {"bytes": (folder / name).stat().st_size, HASH_NAME: file_digest(folder / name)}
        assert (folder / name).stat().st_mode & 0o777 == 0o644


def _loss_samples(vocab: int) -> list[LossSample]:
    generator = torch.Generator().manual_seed(0)
    return [LossSample.all_positions(torch.randint(4, vocab, (12,), generator=generator)) for _ in range(3)]


def test_damaged_fisher_scores_are_recomputed_with_a_warning(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    samples = _loss_samples(len(tiny_llama.tokenizer))
    first = cached_fisher_scores(tiny_llama, samples, {"data": "x"}, progress=False)
    stored = fisher.fisher_cache_folder(tiny_llama, samples, {"data": "x"}) / fisher.SCORES_FILE
    _overwrite(stored, stored.stat().st_size // 2, b"\x00" * 4096)
    with pytest.warns(UserWarning, match="scores.safetensors changed"):
        second = cached_fisher_scores(tiny_llama, samples, {"data": "x"}, progress=False)
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert is_intact(stored.parent)


TINY_ORGANISM = dataclasses.replace(
    organism_spec("tom"),
    name="tom-faults",
    shape=Shape(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16, d_mlp=64),
    training=Training(steps=6, batch_size=8, lr=3e-3, warmup=2, n_task=300, n_filler=60, checkpoint_every=3),
)


def test_a_damaged_organism_is_retrained_to_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    monkeypatch.setitem(ORGANISMS, TINY_ORGANISM.name, TINY_ORGANISM)
    folder = organism_folder(TINY_ORGANISM.name, progress=False)
    original = (folder / "model.safetensors").read_bytes()
    _overwrite(folder / "model.safetensors", len(original) // 2, b"\x00" * 4096)
    with pytest.warns(UserWarning, match="model.safetensors changed"):
        assert organism_folder(TINY_ORGANISM.name, progress=False) == folder
    assert (folder / "model.safetensors").read_bytes() == original


def test_a_damaged_sae_is_retrained(tiny_llama, tmp_path, monkeypatch):
    from steerscope.steering.sae import SAETrainSettings, train_saes

    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    settings = SAETrainSettings(expansion=2, k=4, batch_size=64, context=24, ce_windows=1)
    texts = [
        f"text {i}: a short text for a tiny sparse autoencoder, long enough for tokens" for i in range(40)
    ]
    first = train_saes(tiny_llama, ["L1.resid_post"], settings, texts)["L1.resid_post"]
    weights = first.folder / "sae_weights.safetensors"
    _overwrite(weights, weights.stat().st_size // 2, b"\x00" * 4096)
    with pytest.warns(UserWarning, match="sae_weights.safetensors changed"):
        second = train_saes(tiny_llama, ["L1.resid_post"], settings, texts)["L1.resid_post"]
    assert second.built and is_intact(second.folder)


def _sae_build_killed_after_training(tiny_llama, settings, texts, monkeypatch):
    """Run an SAE build that dies once training is done, leaving its shards and checkpoints."""
    from steerscope.steering import sae as sae_module

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(sae_module, "sae_quality", killed)
        with pytest.raises(KeyboardInterrupt):
            sae_module.train_saes(tiny_llama, ["L1.resid_post"], settings, texts, progress=False)


def test_damaged_sae_shards_and_checkpoints_are_redone_with_a_warning(tiny_llama, tmp_path, monkeypatch):
    from steerscope.steering.sae import SAETrainSettings, train_saes

    monkeypatch.setenv("STEERSCOPE_CACHE", str(tmp_path))
    settings = SAETrainSettings(expansion=2, k=4, epochs=8.0, batch_size=64, context=24, ce_windows=1)
    texts = [
        f"text {i}: a short text for a tiny sparse autoencoder, long enough for tokens" for i in range(40)
    ]
    _sae_build_killed_after_training(tiny_llama, settings, texts, monkeypatch)
    work = next((tmp_path / "sae-work").iterdir())
    shard = work / "train-00000.safetensors"
    _overwrite(shard, shard.stat().st_size // 2, b"\x00" * 64)
    (checkpoint,) = sorted(work.glob("train-*/checkpoint-*.safetensors"))[-1:]
    _overwrite(checkpoint, checkpoint.stat().st_size // 2, b"\x00" * 64)
    with pytest.warns(UserWarning) as warned:
        trained = train_saes(tiny_llama, ["L1.resid_post"], settings, texts, progress=False)["L1.resid_post"]
    messages = " | ".join(str(w.message) for w in warned)
    assert "train-00000.safetensors its bytes do not match" in messages
    assert f"discarding SAE checkpoint {checkpoint.with_suffix('.json')}" in messages
    assert (
        trained.built
        and is_intact(trained.folder)
        and trained.report["resumed_from_step"] < trained.report["steps"]
    )


# ---------------------------------------------------------------- 2. checkpoints


SMALL = dataclasses.replace(TINY_ORGANISM, training=dataclasses.replace(TINY_ORGANISM.training, steps=60))


@pytest.fixture(scope="module")
def small_corpus():
    return build_corpus(SMALL)


class _Planted:
    """Unpickling this creates a file: the code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_a_planted_pickle_checkpoint_is_never_unpickled(small_corpus, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    marker = tmp_path / "code-ran"
    (work / LEGACY_CHECKPOINT).write_bytes(pickle.dumps({"model": _Planted(marker)}))
    with pytest.warns(UserWarning, match="pickled checkpoints are never loaded"):
        _, state = train_steps(SMALL, small_corpus, work, until=3, progress=False)
    assert not marker.exists() and not (work / LEGACY_CHECKPOINT).exists() and state["step"] == 3


def _checkpoint(work: Path, step: int, suffix: str) -> Path:
    return work / f"checkpoint-{step:07d}{suffix}"


@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        (".safetensors", "checkpoint-0000006.safetensors does not match the xxh3_128"),  # random bytes
        (".json", "unreadable"),  # garbage metadata
    ],
)
def test_a_damaged_checkpoint_is_discarded_and_training_resumes_from_the_last_good_one(
    small_corpus, tmp_path, damaged, message
):
    straight, _ = train_steps(SMALL, small_corpus, tmp_path / "straight", until=9, progress=False)
    work = tmp_path / "resumed"
    train_steps(SMALL, small_corpus, work, until=6, progress=False)  # checkpoints at 3 and 6, "killed"
    path = _checkpoint(work, 6, damaged)
    _overwrite(path, path.stat().st_size // 2, os.urandom(64))
    with pytest.warns(UserWarning, match=f"discarding checkpoint .*checkpoint-0000006.json: {message}"):
        resumed, state = train_steps(SMALL, small_corpus, work, until=9, progress=False)
    assert state["step"] == 9 and _same_weights(resumed, straight)
    assert sorted(p.name for p in work.iterdir()) == [
        "checkpoint-0000006.json",
        "checkpoint-0000006.safetensors",
        "checkpoint-0000009.json",
        "checkpoint-0000009.safetensors",
    ]


def test_with_every_checkpoint_damaged_training_starts_over(small_corpus, tmp_path):
    straight, _ = train_steps(SMALL, small_corpus, tmp_path / "straight", until=3, progress=False)
    work = tmp_path / "resumed"
    train_steps(SMALL, small_corpus, work, until=6, progress=False)
    _checkpoint(work, 6, ".safetensors").write_bytes(os.urandom(1000))
    _checkpoint(work, 3, ".json").write_text(json.dumps({"format": 1, "recipe": "someone else's"}))
    with pytest.warns(UserWarning) as warned:
        resumed, state = train_steps(SMALL, small_corpus, work, until=3, progress=False)
    assert [str(w.message).split(": ")[1].split(";")[0] for w in warned] == [
        "checkpoint-0000006.safetensors does not match the xxh3_128 in its JSON",
        "written for another recipe",
    ]
    assert state["step"] == 3 and _same_weights(resumed, straight)


UNPICKLING = re.compile(
    r"^\s*(import|from)\s+(pickle|cPickle|dill|joblib|shelve)\b|\bpickle\.|allow_pickle=True|weights_only=False",
    re.MULTILINE,
)


def test_no_pickle_and_no_unsafe_torch_load_in_the_package():
    sources = [
        p for folder in ("steerscope", "probes", "steering", "kernels") for p in (REPO / folder).rglob("*.py")
    ]
    assert len(sources) > 40
    for path in sources:
        text = path.read_text()
        assert not UNPICKLING.search(text), (path, UNPICKLING.search(text))
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
    assert UNPICKLING.search("import pickle\n") and UNPICKLING.search("torch.load(f, weights_only=False)")


# ---------------------------------------------------------------- 3. steering vectors


def _llama(**overrides) -> ss.Model:
    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(tiny_config("llama", len(tokenizer), **overrides)).eval()
    return as_model(hf, tokenizer)


def _vector(model: ss.Model, site: str = "L1.resid_post") -> SteeringVector:
    return SteeringVector({site: torch.randn(model.anatomy.d_model)}, Fingerprint.of(model))


def test_a_vector_is_refused_on_a_deeper_model_or_another_config_unless_forced(tiny_llama):
    vector = _vector(tiny_llama)
    deeper = _llama(num_hidden_layers=8, rope_theta=500.0)
    with pytest.raises(InputError, match="4 layers, config [0-9a-f]+; this model is llama .* 8 layers"):
        vector.check(deeper)
    other_rope = _llama(rope_theta=500.0)
    with pytest.raises(InputError, match="pass force=True"):
        with steer(other_rope, vector, strength=0.1):
            pass
    with pytest.warns(UserWarning, match="applied anyway"):
        with steer(other_rope, vector, strength=0.1, force=True):
            steered = _logits(other_rope)
    assert not torch.equal(steered, _logits(other_rope))
    same = tiny_model("llama", seed=1)  # other weights, same config: accepted without a word
    assert vector.check(same).hf is same.hf


def _saved(tmp_path: Path, model: ss.Model) -> tuple[Path, Path]:
    json_path = _vector(model).save(tmp_path / "v")
    return json_path, json_path.with_suffix(".safetensors")


def test_an_edited_fingerprint_or_overwritten_tensor_bytes_are_refused(tmp_path, tiny_llama):
    json_path, tensors_path = _saved(tmp_path, tiny_llama)
    meta = json.loads(json_path.read_text())
    meta["fingerprint"]["n_layers"] = 8
    json_path.write_text(json.dumps(meta))
    with pytest.raises(
        InputError, match=f"{re.escape(str(json_path))}: fingerprint or provenance was changed"
    ):
        SteeringVector.load(json_path)
    json_path, tensors_path = _saved(tmp_path, tiny_llama)
    _overwrite(tensors_path, tensors_path.stat().st_size - 4, b"\x00\x00\x80\x4f")  # one entry 4.3e9
    with pytest.raises(InputError, match=f"{re.escape(str(tensors_path))} was changed after saving"):
        SteeringVector.load(json_path, model=tiny_llama)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("truncated tensors", "was changed after saving"),
        ("garbled tensors", "was changed after saving"),
        ("bad json", "is not a steering vector's JSON .*JSONDecodeError"),
        ("missing key", "is not a steering vector's JSON .*KeyError: 'content_hash'"),
        ("json is a list", "is not a steering vector's JSON .*TypeError"),
        ("missing tensors", "steering vector file missing: .*v.safetensors"),
    ],
)
def test_every_vector_load_error_names_the_file_and_the_problem(tmp_path, tiny_llama, fault, message):
    json_path, tensors_path = _saved(tmp_path, tiny_llama)
    if fault == "truncated tensors":
        tensors_path.write_bytes(tensors_path.read_bytes()[:100])
    elif fault == "garbled tensors":
        tensors_path.write_bytes(os.urandom(tensors_path.stat().st_size))
    elif fault == "bad json":
        json_path.write_text(json_path.read_text()[:-20])
    elif fault == "missing key":
        meta = json.loads(json_path.read_text())
        del meta["content_hash"]
        json_path.write_text(json.dumps(meta))
    elif fault == "json is a list":
        json_path.write_text("[]")
    else:
        tensors_path.unlink()
    with pytest.raises(InputError, match=message) as error:
        SteeringVector.load(tmp_path / "v")
    assert str(tmp_path / "v") in str(error.value) and "\n" not in str(error.value)


def test_saved_vectors_keep_the_name_given_dots_included(tmp_path, tiny_llama):
    """Issue 25: save("d/sentiment.L1") then save("d/sentiment.L3") wrote one pair of files, and
    loading the first name returned the second vector."""
    first, third = _vector(tiny_llama, "L1.resid_post"), _vector(tiny_llama, "L3.resid_post")
    assert first.save(tmp_path / "sentiment.L1") == tmp_path / "sentiment.L1.json"
    third.save(tmp_path / "sentiment.L3")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "sentiment.L1.json",
        "sentiment.L1.safetensors",
        "sentiment.L3.json",
        "sentiment.L3.safetensors",
    ]
    for name, vector in (("sentiment.L1", first), ("sentiment.L3", third)):
        loaded = SteeringVector.load(tmp_path / name)
        assert list(loaded.directions) == list(vector.directions)
        assert all(torch.equal(loaded.directions[s], vector.directions[s]) for s in vector.directions)
        # either of its files names the same vector, so save(load's path) round-trips
        assert list(SteeringVector.load(tmp_path / f"{name}.json").directions) == list(vector.directions)
    with pytest.raises(InputError, match="a .gguf name is a llama.cpp control vector; use save_gguf"):
        first.save(tmp_path / "sentiment.gguf")  # its JSON would be the control vector's sidecar
    with pytest.raises(InputError, match="use save_gguf / load_gguf"):
        SteeringVector.load(tmp_path / "sentiment.gguf.json")


# ---------------------------------------------------------------- 4. values


@pytest.fixture
def forward_calls(tiny_llama):
    """How many forward passes `tiny_llama` ran since the fixture started."""
    calls = []
    handle = tiny_llama.hf.register_forward_pre_hook(lambda *args: calls.append(1))
    yield calls
    handle.remove()


@pytest.mark.parametrize(
    ("strength", "message"),
    [
        (float("nan"), r"strength must be a finite number, got nan \(float\)"),
        (float("inf"), r"strength must be a finite number, got inf \(float\)"),
        ("0.5", r"strength must be a finite number, or one per batch row .*; got '0.5' \(str\)"),
        (None, r"strength must be a finite number, or one per batch row .*; got None"),
        ([], r"strength must be a finite number, or one per batch row .*; got \[\]"),
        ([float("-inf")], "strength must be a finite number, got -inf"),
        (torch.tensor([0.1, float("nan")]), "strength must be a finite number, got nan"),
        (torch.ones(2, 2), r"strength must be a finite number, or one per batch row .*; got tensor"),
        (True, r"strength must be a finite number, .* got True \(bool\)"),
    ],
)
def test_non_finite_or_non_numeric_strengths_fail_before_any_forward(
    tiny_llama, forward_calls, strength, message
):
    with pytest.raises(InputError, match=message):
        with steer(tiny_llama, _vector(tiny_llama), strength=strength):
            tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
    assert not forward_calls


def test_a_0d_tensor_strength_is_the_number_it_holds(tiny_llama):
    batch, vector = tokenize(tiny_llama, PROMPTS), _vector(tiny_llama)
    with steer(tiny_llama, vector, strength=0.1):
        expected = tiny_llama.hf(**batch).logits
    for strength in (torch.tensor(0.1), torch.tensor(0.1, dtype=torch.float64), [torch.tensor(0.1)]):
        with steer(tiny_llama, vector, strength=strength):
            assert torch.equal(tiny_llama.hf(**batch).logits, expected)
    with pytest.raises(InputError, match=r"strength must be a finite number, got nan"):
        steering_edit(torch.ones(64), torch.tensor(float("nan")))


def test_vectors_with_different_per_row_counts_fail_before_any_forward(tiny_llama, forward_calls):
    vectors = [_vector(tiny_llama), _vector(tiny_llama, "L2.resid_post")]
    with pytest.raises(InputError, match=r"the vectors' per-row strengths give \[2, 3\] rows"):
        with steer(tiny_llama, vectors, strength=[[0.1, 0.2], [0.1, 0.2, 0.3]]):
            tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
    assert not forward_calls


def test_per_row_strengths_for_another_batch_size_fail_at_the_first_forward_in_one_line(tiny_llama):
    with pytest.raises(
        InputError,
        match="^steer\\(\\) got 3 per-row strengths or vectors for a batch of 2 rows; give one per batch row",
    ) as error:
        with steer(tiny_llama, _vector(tiny_llama), strength=[0.1, 0.2, 0.3]):
            tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("positions", "message"),
    [
        ((5, 2), r"bad positions \(5, 2\): the range is empty; stop must be above start"),
        (range(5, 2), r"bad positions range\(5, 2\): the range is empty"),
        ((3, 3), r"bad positions \(3, 3\): the range is empty"),
        ((-1, 3), r"bad positions \(-1, 3\): start must be >= 0 \(positions count real tokens from 0\)"),
        (range(-2, 3), r"bad positions range\(-2, 3\): start must be >= 0"),
        ((True, 3), r"bad positions \(True, 3\): start and stop must be integers"),
        ((0, False), r"bad positions \(0, False\): start and stop must be integers"),
        ((0.5, 3), r"start and stop must be integers"),
        (range(0, 10, 2), r"bad positions range\(0, 10, 2\): a range must have step 1"),
        ([2, 5], r"bad positions \[2, 5\]; valid: 'all', 'prompt'"),
        ((1, 2, 3), r"bad positions \(1, 2, 3\); valid"),
    ],
)
def test_empty_reversed_negative_or_bool_position_ranges_fail_before_any_forward(
    tiny_llama, forward_calls, positions, message
):
    for make in (
        lambda: steer(tiny_llama, _vector(tiny_llama), strength=0.5, positions=positions),
        lambda: ss.intervene(tiny_llama, {"L1.resid_post": steering_edit(torch.ones(64), 0.5, positions)}),
    ):
        with pytest.raises(InputError, match=message) as error:
            with make():
                tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
        assert "\n" not in str(error.value)
    assert not forward_calls


def test_a_range_stop_beyond_any_context_is_clamped_so_it_steers_to_the_end(tiny_llama):
    inputs = tokenize_for_generate(tiny_llama, PROMPTS)
    vector = _vector(tiny_llama)
    runs = {}
    for positions in ((0, 10**30), range(0, 2**70), "all", (0, 3)):
        with steer(tiny_llama, vector, strength=2.0, positions=positions):
            runs[str(positions)] = tiny_llama.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert torch.equal(runs["(0, 1000000000000000000000000000000)"], runs["all"])
    assert torch.equal(runs[str(range(0, 2**70))], runs["all"])
    assert not torch.equal(runs["(0, 3)"], runs["all"])


def test_a_zero_direction_at_relative_scale_fails_before_any_forward(tiny_llama, forward_calls):
    zero = SteeringVector({"L1.resid_post": torch.zeros(64)}, Fingerprint.of(tiny_llama))
    with pytest.raises(InputError, match="L1.resid_post: direction has zero norm"):
        with steer(tiny_llama, zero, strength=0.5):
            tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
    with pytest.raises(InputError, match="zero norm"):
        steering_edit(torch.zeros(64), 0.5)
    with steer(tiny_llama, zero, strength=0.5, scale="absolute"):  # adds nothing, as asked
        assert torch.equal(_logits(tiny_llama), _logits(tiny_llama))
    assert len(forward_calls) == 2


def test_empty_prompt_lists_fail_clearly_at_every_entry_point(tiny_llama, forward_calls):
    cases = {
        "prompts is empty": [
            lambda: ss.capture(tiny_llama, [], "L1.resid_post"),
            lambda: tokenize(tiny_llama, []),
            lambda: top_token_probability(tiny_llama, []),
            lambda: greedy_continuations(tiny_llama, []),
            lambda: continuation_logprobs(tiny_llama, [], []),
        ],
        "windows is empty": [lambda: perplexity(tiny_llama, [])],
        "got 0 and 2": [lambda: diff_of_means(tiny_llama, [], PROMPTS, "L1.resid_post")],
    }
    for message, calls in cases.items():
        for call in calls:
            with pytest.raises(InputError, match=message):
                call()
    assert not forward_calls


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (lambda a: 0.5, "returned a float; expected None or a tensor"),
        (
            lambda a: a.double(),
            r"returned a tensor \(2, 19, 64\) torch.float64 on cpu; expected None or a tensor \(2, 19, 64\) torch.float32 on cpu",
        ),
        (lambda a: a[:, -1], r"returned a tensor \(2, 64\) torch.float32"),
        (lambda a: a.tolist(), "returned a list"),
    ],
)
def test_an_edit_returning_the_wrong_type_dtype_or_shape_is_named(tiny_llama, returned, message):
    def my_edit(act, tokens):
        return returned(act)

    with pytest.raises(InputError, match=f"edit .*my_edit at L2.resid_post {message}"):
        with ss.intervene(tiny_llama, {"L2.resid_post": my_edit}):
            tiny_llama.hf(**tokenize(tiny_llama, PROMPTS))
