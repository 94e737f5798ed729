import multiprocessing
import time
from pathlib import Path

import pytest
import torch

import steerscope as ss
from steerscope.cache import MANIFEST, cached_folder, is_intact
from steerscope.errors import InputError
from steerscope.loading import embedded_cache_dir


def _build_payload(folder: Path) -> None:
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4096)
    with open(folder.parent / "builds.log", "a") as log:
        log.write("built\n")


def _slow_build(folder: Path) -> None:
    time.sleep(1.0)
    _build_payload(folder)


def _builds(tmp_path: Path) -> int:
    log = tmp_path / "builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_cache_is_built_once_and_reused(tmp_path):
    folder = tmp_path / "entry"
    assert cached_folder(folder, _build_payload) == (folder, True)
    assert cached_folder(folder, _build_payload) == (folder, False)
    assert _builds(tmp_path) == 1 and is_intact(folder)


def test_damaged_cache_is_detected_and_rebuilt(tmp_path):
    folder = tmp_path / "entry"
    cached_folder(folder, _build_payload)
    payload = folder / "weights.bin"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    assert not is_intact(folder)
    with pytest.warns(UserWarning, match="weights.bin changed"):
        assert cached_folder(folder, _build_payload) == (folder, True)
    (folder / "weights.bin").write_bytes(b"truncated")
    assert not is_intact(folder)
    (folder / MANIFEST).unlink()
    assert not is_intact(folder)


def test_a_killed_builders_temporary_folder_is_removed_by_the_next_build(tmp_path):
    (tmp_path / "entry.tmp-dead1234").mkdir()  # what SIGKILL mid-build leaves
    (tmp_path / "entry.tmp-dead1234" / "half.bin").write_bytes(b"x")
    cached_folder(tmp_path / "entry", _build_payload)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds.log", "entry", "entry.lock"]


def test_a_failed_build_leaves_nothing_behind(tmp_path):
    def broken(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x" * 100)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_folder(tmp_path / "entry", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]


def test_concurrent_loads_build_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=cached_folder, args=(tmp_path / "entry", _slow_build)) for _ in range(2)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert _builds(tmp_path) == 1 and is_intact(tmp_path / "entry")


def test_load_from_a_local_folder_and_in_bfloat16(tmp_path, tiny_llama):
    tiny_llama.hf.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    ids = tiny_llama.tokenizer(["abc"], return_tensors="pt").input_ids
    loaded = ss.load(tmp_path)
    assert torch.equal(loaded(ids).logits, tiny_llama(ids).logits)
    half = ss.load(str(tmp_path), dtype="bfloat16")
    assert half.hf.dtype == torch.bfloat16
    assert half.anatomy == tiny_llama.anatomy


def test_load_accepts_a_ready_model_without_copying(tiny_llama):
    model = ss.load(tiny_llama.hf, tokenizer=tiny_llama.tokenizer)
    assert model.hf is tiny_llama.hf and model.anatomy.n_layers == 4


def test_load_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(InputError, match="unsupported dtype 'float8'; valid: float32, bfloat16, float16"):
        ss.load("anything", dtype="float8")
    with pytest.raises(InputError, match="GGUF file not found"):
        ss.load(tmp_path / "missing.gguf")
    with pytest.raises(InputError, match="model folder not found"):
        ss.load(str(tmp_path / "no-such-folder"))
    with pytest.raises(InputError, match="could not load 'no-such-org/no-such-model'.*HF_HUB_OFFLINE"):
        ss.load("no-such-org/no-such-model")
    with pytest.raises(InputError, match="expected a steerscope Model"):
        ss.load(42)


def test_embedded_model_is_cached_as_intact_safetensors(gemma):
    folder = embedded_cache_dir()
    assert is_intact(folder)
    assert (folder / "model.safetensors").stat().st_size > 1_000_000_000  # fp32, 268M parameters
    assert gemma.hf.dtype == torch.float32
    assert "embedded" in gemma.source
