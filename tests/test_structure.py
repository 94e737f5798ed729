"""The package's import graph: no module imports itself back through others, and no experiment
imports another (what two experiments share lives in `probes/` or `steering/`).

Every import statement counts, at module level, under `if TYPE_CHECKING:` and inside functions: a
cycle hidden in a function or a type-checking block is still two modules that need each other. So
does `importlib.import_module(name)` where `name` is a string literal, a module-level string
constant or an f-string of those: an f-string with a part known only at run time (`f"{PACKAGE}.{x}"`)
counts as an import of the package its known prefix names, which Python imports before any module
in it.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Import name -> folder, as setup.py maps them.
PACKAGE_FOLDERS = {
    "steerscope": "steerscope",
    "steerscope.probes": "probes",
    "steerscope.steering": "steering",
    "steerscope.kernels": "kernels",
}
EXPERIMENTS = "steerscope.experiments"


def module_files(root: Path, folders: dict[str, str]) -> dict[str, Path]:
    """Every module under the folders by its dotted import name (a package by its own name)."""
    modules = {}
    for package, folder in folders.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root / folder).with_suffix("").parts if p != "__init__"]
            modules[".".join([package, *parts])] = path
    return modules


def string_constants(tree: ast.Module) -> dict[str, str]:
    """The module-level `NAME = "text"` assignments (annotated or not)."""
    constants = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None
        target = node.target if isinstance(node, ast.AnnAssign) else target
        if isinstance(target, ast.Name) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                constants[target.id] = node.value.value
    return constants


def loaded_name(argument: ast.expr, constants: dict[str, str]) -> str | None:
    """The module an `import_module` argument surely loads: the whole name when it is known, else the
    package named by the known prefix of an f-string (up to its last dot); None when nothing is."""
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    if isinstance(argument, ast.Name):
        return constants.get(argument.id)
    if not isinstance(argument, ast.JoinedStr):
        return None
    known = ""
    for part in argument.values:
        if isinstance(part, ast.Constant):
            known += part.value
        elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name):
            if part.value.id not in constants or part.conversion != -1 or part.format_spec:
                return known.rpartition(".")[0] or None
            known += constants[part.value.id]
        else:
            return known.rpartition(".")[0] or None
    return known


def dynamic_imports(tree: ast.Module) -> set[str]:
    """The modules `importlib.import_module(...)` calls load (see `loaded_name`); relative names skipped."""
    constants = string_constants(tree)
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "importlib"
            and node.args
        ):
            name = loaded_name(node.args[0], constants)
            if name and not name.startswith("."):
                names.add(name)
    return names


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """For each module, the project modules its import statements name (`from pkg import sub` names
    the submodule `pkg.sub` when it is one, else the package `pkg`) and its `importlib` loads."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        targets = {loaded for loaded in dynamic_imports(tree) if loaded in modules}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        targets.add(f"{base}.{alias.name}")
                    elif base in modules:
                        targets.add(base)
        graph[name] = targets - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    return "; ".join(f"{m} -> {sorted(graph[m] & set(component))}" for m in component)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files(ROOT, PACKAGE_FOLDERS))


def test_graph_sees_every_package_and_its_imports(graph):
    assert {
        "steerscope",
        "steerscope.probes.fisher",
        "steerscope.steering.apply",
        "steerscope.kernels.sae_edit",
    } <= set(graph)
    assert "steerscope.kernels.per_sample_grads" in graph["steerscope.probes.fisher"]


def test_cycle_finder_reports_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import a\n")
    (package / "c.py").write_text("from . import a\n")
    found = cycles(import_graph(module_files(tmp_path, {"pkg": "pkg"})))
    assert found == [["pkg.a", "pkg.b"]]


def test_cycle_finder_follows_importlib_loads(tmp_path):
    package = tmp_path / "pkg"
    (package / "plugins").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "plugins" / "__init__.py").write_text("from pkg.runner import run\n")
    (package / "plugins" / "one.py").write_text("")
    (package / "runner.py").write_text(
        "import importlib\nPLUGINS = 'pkg.plugins'\n"
        "def run(name):\n    importlib.import_module(f'{PLUGINS}.{name}')\n"
    )
    (package / "loader.py").write_text("import importlib\nimportlib.import_module('pkg.runner')\n")
    graph = import_graph(module_files(tmp_path, {"pkg": "pkg"}))
    assert graph["pkg.runner"] == {"pkg.plugins"}
    assert graph["pkg.loader"] == {"pkg.runner"}
    assert cycles(graph) == [["pkg.plugins", "pkg.runner"]]


def test_runner_loads_the_experiments_package_which_does_not_import_it_back(graph):
    assert "steerscope.experiments" in graph["steerscope.runner"]
    assert not graph["steerscope.experiments"]


def test_package_has_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(describe(c, graph) for c in found)


def test_no_experiment_imports_another(graph):
    experiments = {m for m in graph if m.startswith(f"{EXPERIMENTS}.")}
    assert len(experiments) >= 7
    crossing = {m: sorted(graph[m] & experiments) for m in experiments if graph[m] & experiments}
    assert not crossing, f"experiments importing experiments: {crossing}"


def test_data_does_not_import_the_organisms_built_on_it(graph):
    data = {m for m in graph if m.startswith("steerscope.data")}
    upward = {m: sorted(t for t in graph[m] if t.startswith("steerscope.organisms")) for m in data}
    assert not {m: up for m, up in upward.items() if up}, f"data importing organisms: {upward}"


PUBLIC_PACKAGES = ["steerscope", "steerscope.probes", "steerscope.steering", "steerscope.kernels"]


@pytest.mark.parametrize("package", PUBLIC_PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert len(module.__all__) == len(set(module.__all__))
    missing = [name for name in module.__all__ if getattr(module, name, None) is None]
    assert not missing, f"{package}.__all__ names what it cannot give: {missing}"
    assert set(module.__all__) <= set(dir(module))


def test_a_notebook_finds_its_entry_points_in_four_packages():
    import steerscope as ss
    from steerscope import probes, steering

    for name in (
        "load",
        "capture",
        "intervene",
        "perturb",
        "steer",
        "tokenize_for_generate",
        "run_experiment",
        "suite_for",
    ):
        assert name in ss.__all__
    assert {"tom_scores", "cached_fisher_scores", "rotary_stats", "position_logits", "train_probe"} <= set(
        probes.__all__
    )
    assert {"diff_of_means", "SteeringVector", "train_saes", "spare_edits", "efficiency_vector"} <= set(
        steering.__all__
    )


def test_import_steerscope_loads_no_heavy_dependency():
    code = "import sys, steerscope; print(sorted(m for m in {HEAVY} if m in sys.modules))"
    heavy = ("transformers", "plotly", "datasets", "sae_lens", "nnsight", "transformer_lens")
    shown = subprocess.run(
        [sys.executable, "-c", code.format(HEAVY=heavy)], capture_output=True, text=True, check=True
    )
    assert shown.stdout.strip() == "[]"
