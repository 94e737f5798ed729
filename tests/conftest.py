"""Shared fixtures: the real embedded model (loaded once per session) and tiny random models."""

from __future__ import annotations

import os

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
