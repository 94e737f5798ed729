"""The wheel is the package users install: it must hold every module of the source tree and the
organisms' committed weights, and `steerscope run` and `load("organism:NAME")` must work from it
without the editable install's help (and without training anything)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {
    "steerscope": "steerscope",
    "probes": "steerscope/probes",
    "steering": "steerscope/steering",
    "kernels": "steerscope/kernels",
}


def source_modules() -> set[str]:
    """Every .py file of the four source folders, as its path inside the installed package."""
    found = set()
    for folder, installed in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            found.add(f"{installed}/{path.relative_to(ROOT / folder).as_posix()}")
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so no build/ folder (whose stale files a later wheel would ship) is left here.
    source = tmp_path_factory.mktemp("source") / "steerscope"
    shutil.copytree(
        ROOT, source, ignore=shutil.ignore_patterns(".*", "runs", "build", "*.egg-info", "__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(source),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("steerscope-*.whl")
    return built


def committed_organism_files() -> set[str]:
    """Every file of the organisms' committed weights, as its path inside the installed package."""
    weights = ROOT / "steerscope" / "organisms" / "trained-weights"
    return {
        f"steerscope/{p.relative_to(ROOT / 'steerscope').as_posix()}"
        for p in weights.rglob("*")
        if p.is_file()
    }


def test_wheel_ships_every_module_of_the_source_tree_and_no_top_level_probes(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    modules = {n for n in names if n.endswith(".py")}
    assert modules == source_modules()
    assert {n for n in names if "/organisms/trained-weights/" in n} == committed_organism_files()
    assert {"model.safetensors", "steerscope-manifest.json"} <= {n.rsplit("/", 1)[1] for n in names}
    top_level = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"steerscope"}  # never a top-level `probes`, `steering` or `kernels`


def test_installed_wheel_runs_an_experiment_without_the_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    out, cache = tmp_path / "run", tmp_path / "cache"
    script = (
        "import sys, steerscope; from steerscope.cli import main; "
        f"assert steerscope.__file__.startswith({str(target)!r}), steerscope.__file__; "
        "organism = steerscope.load('organism:length'); "
        f"assert organism.source.startswith('organism:length ({target}'), organism.source; "
        f"sys.exit(main(['run', 'smoke', '--model', 'tiny:llama', '--quick', '--out', {str(out)!r}]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target), "HF_HUB_OFFLINE": "1", "STEERSCOPE_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["experiment"] == "smoke" and len(results["resid_norm_per_layer"]) == 4
    assert not list(cache.glob("organism-*")), "the installed wheel trained an organism"
