"""Shared fixtures: the real embedded model (loaded once per session) and tiny random models."""

from __future__ import annotations

import os
import shutil
import subprocess

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

import steerscope as ss  # noqa: E402
from steerscope.tiny import tiny_model  # noqa: E402

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma3")


@pytest.fixture(scope="session")
def gemma() -> ss.Model:
    """The embedded Gemma 3 270M, fp32 (built into the cache on first use)."""
    torch.manual_seed(0)
    return ss.load()


@pytest.fixture(scope="session")
def tom_organism() -> ss.Model:
    """organism:tom: its committed weights, verified on load."""
    return ss.load("organism:tom")


@pytest.fixture(params=FAMILIES)
def tiny(request: pytest.FixtureRequest) -> ss.Model:
    """A tiny random model of each supported family."""
    return tiny_model(request.param)


@pytest.fixture
def tiny_llama() -> ss.Model:
    return tiny_model("llama")


@pytest.fixture
def tiny_gemma() -> ss.Model:
    return tiny_model("gemma3")


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if the runner loads a model."""
    import steerscope.runner as runner

    def load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(runner, "load", load)


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot write in: mode 0555, and immutable (chattr +i) for root, whom
    mode bits do not stop."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = os.geteuid() == 0
    if immutable and (
        shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0
    ):
        pytest.skip("running as root without chattr +i: no folder is read-only to this process")
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)
