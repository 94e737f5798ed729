"""The experiment registry: its own module with no project imports, names registered once,
experiments found without a list, and no experiment importing another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from steerscope.registry import Experiment, ExperimentConfig, Registry
from steerscope.runner import discover_experiments, get_experiment

PACKAGE = Path(__file__).parent.parent / "steerscope"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_a_name_registered_twice_is_an_error():
    registry = Registry()
    experiment = Experiment("twice", "", ExperimentConfig, lambda config, context: None)
    registry.add(experiment)
    with pytest.raises(ValueError, match="'twice' is registered twice"):
        registry.add(experiment)


def test_the_registry_imports_nothing_of_steerscope():
    assert not [m for m in imported_modules(PACKAGE / "registry.py") if m.startswith("steerscope")]


def experiment_packages() -> list[Path]:
    return sorted(p for p in (PACKAGE / "experiments").iterdir() if (p / "__init__.py").exists())


def test_every_experiment_package_is_discovered_with_its_data_kinds():
    packages = {p.name.replace("_", "-") for p in experiment_packages()}
    assert set(discover_experiments()) == packages
    assert get_experiment("tom-sensitivity").data_kinds == ("tom", "text")
    assert get_experiment("spare").data_kinds == ("conflicts", "text")
    assert get_experiment("smoke").data_kinds == ()


def test_no_experiment_imports_another():
    for package in experiment_packages():
        own = f"steerscope.experiments.{package.name}"
        for path in package.rglob("*.py"):
            imported = imported_modules(path)
            others = [
                m
                for m in imported
                if m.startswith("steerscope.experiments") and m.split(".")[:3] != own.split(".")
            ]
            assert not others, f"{path.relative_to(PACKAGE)} imports {others}"
