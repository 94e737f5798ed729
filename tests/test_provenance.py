"""results.json's `provenance` says what decided a run's numbers: the run's id and call, the
steerscope commit, library versions, the machine's numerics and content hashes of the weights it
computed with, so two runs that differ can be told apart by what differed."""

from __future__ import annotations

import json
import re
import shlex
import sys
from importlib.metadata import version

import torch

from steerscope.cache import cached_folder, weights_digest
from steerscope.cli import main
from steerscope.provenance import model_weights
from steerscope.tiny import tiny_model


def test_weights_digest_covers_the_weights_files_and_nothing_else(tmp_path):
    def build(report: str, weight: bytes):
        def write(folder):
            (folder / "model.safetensors").write_bytes(weight)
            (folder / "report.json").write_text(report)

        return write

    first, _ = cached_folder(tmp_path / "a", build('{"seconds": 1}', b"weights"))
    same, _ = cached_folder(tmp_path / "b", build('{"seconds": 2}', b"weights"))
    other, _ = cached_folder(tmp_path / "c", build('{"seconds": 1}', b"weightz"))
    assert len(weights_digest(first)) == 32
    assert weights_digest(first) == weights_digest(same) != weights_digest(other)
    assert weights_digest(tmp_path) is None  # no manifest


def test_a_model_without_a_cache_folder_is_hashed_in_memory_and_any_change_shows():
    model, twin = tiny_model("llama"), tiny_model("llama")
    digest = model_weights(model)
    assert digest == model_weights(twin) and digest["of"] == "parameters and buffers in memory"
    with torch.no_grad():
        twin.hf.model.norm.weight[0] += 1e-6
    assert model_weights(twin)["xxh3_128"] != digest["xxh3_128"]


def test_a_run_records_its_id_call_commit_libraries_numerics_and_weights(tmp_path, monkeypatch):
    argv = ["run", "smoke", "--model", "tiny:llama", "--set", "max_new_tokens=2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", ["/some/venv/bin/steerscope", *argv])
    assert main(argv) == 0
    provenance = json.loads((tmp_path / "results.json").read_text())["provenance"]
    assert (
        re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", provenance["run"]["id"])
        and provenance["run"]["started_utc"]
    )
    invocation = provenance["invocation"]
    assert (
        invocation["command"]
        == f"steerscope run smoke --model tiny:llama --set max_new_tokens=2 --out {tmp_path}"
    )
    assert invocation["process"] == shlex.join(sys.orig_argv)  # this pytest process, as started
    assert invocation["call"]["settings"] == {"quick": False, "seed": 0, "max_new_tokens": 2}
    environment = provenance["environment"]
    assert environment["steerscope"]["checkout"] is True  # the suite runs from a git checkout
    assert len(environment["steerscope"]["commit"]) == 40 and isinstance(
        environment["steerscope"]["dirty"], bool
    )
    assert environment["libraries"]["torch"] == version("torch")
    assert environment["libraries"]["scikit-learn"] == version("scikit-learn")
    numerics = environment["numerics"]
    assert numerics["torch_threads"] == torch.get_num_threads()
    assert numerics["torch_interop_threads"] == torch.get_num_interop_threads()
    assert numerics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert provenance["model"]["weights"] == model_weights(tiny_model("llama"))
