"""The package's layers import one way, top to bottom, and no module imports itself in a circle.

    reweight/cli.py          the command line: may import everything below
    reweight/experiment/     config, sweeps, runs, tracking, checkpoints: core and components
    reweight/components/     the built-in components: the core only
    reweight/core/           the contracts and the bilevel loop: nothing else of reweight
    reweight/__init__.py     the public API: the core at import time, the layers above on first use
    plugins/                 the built-in strategies: only the public API, like a third party

The graph is read from the source (every ``import``, including those inside functions and under
``TYPE_CHECKING``), so the check covers lazy imports too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["core", "components", "experiment", "cli"]  # bottom to top
ALLOWED = {
    "reweight": {"reweight", "core", "components", "experiment"},  # the layers above only on first use
    "core": {"core"},
    "components": {"core", "components"},
    "experiment": {"core", "components", "experiment"},
    "cli": {"reweight", "core", "components", "experiment", "cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "plugins":
        parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    files = [*(ROOT / "reweight").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]
    return {module_name(path): path for path in files}


def imported(path: Path, known: set[str], top_level: bool = False) -> set[str]:
    """The reweight modules that ``path`` imports (``from pkg import mod`` counts as ``pkg.mod``);
    ``top_level``: only the imports that run when the module is imported."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in (tree.body if top_level else ast.walk(tree)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.add(f"relative import in {path.name}")  # unresolved here, so refused below
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known or name.startswith("relative import")}


def layer(module: str) -> str:
    """``reweight.core.data`` -> ``core``; ``reweight`` (the public API) -> ``reweight``."""
    parts = module.split(".")
    return "reweight" if parts == ["reweight"] else parts[1].removesuffix(".py")


GRAPH = {name: imported(path, set(modules())) for name, path in modules().items()}
OURS = sorted(name for name in GRAPH if name.split(".")[0] == "reweight")


def test_importing_the_public_api_loads_only_the_core():
    facade = imported(ROOT / "reweight" / "__init__.py", set(GRAPH), top_level=True)
    assert facade and {layer(name) for name in facade} == {"core"}


def test_imports_are_absolute_so_the_check_sees_them():
    relative = sorted(dep for deps in GRAPH.values() for dep in deps if dep.startswith("relative import"))
    assert not relative, relative


def test_the_layers_are_all_there():
    assert {layer(name) for name in OURS} == {"reweight", *LAYERS}


@pytest.mark.parametrize("module", OURS)
def test_each_module_imports_only_its_own_layer_and_those_below(module):
    wrong = sorted(dep for dep in GRAPH[module] if dep.startswith("reweight") and layer(dep) not in ALLOWED[layer(module)])
    assert not wrong, f"{module} ({layer(module)}) must not import {wrong}"


@pytest.mark.parametrize("plugin", sorted(name for name in GRAPH if name.startswith("reweight_")))
def test_the_builtin_strategies_use_only_the_public_api(plugin):
    assert GRAPH[plugin] <= {"reweight"}, f"{plugin} imports {sorted(GRAPH[plugin] - {'reweight'})}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, or None (depth-first search:
    an edge back to a module still being visited closes a cycle)."""
    state: dict[str, str] = {}  # visiting | done

    def visit(name: str, trail: list[str]) -> list[str] | None:
        state[name] = "visiting"
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "visiting":
                return trail[trail.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, [*trail, dep])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name, [name])):
            return found
    return None


def test_no_import_cycle():
    graph = {name: deps - {name} for name, deps in GRAPH.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_check_sees_a_violation(tmp_path):
    """The graph reader finds lazy imports and ``from package import module`` forms."""
    source = tmp_path / "probe.py"
    source.write_text("def later():\n    from reweight.experiment import config\n    import reweight.cli\n")
    found = imported(source, set(GRAPH))
    assert {"reweight.experiment.config", "reweight.cli"} <= found
    assert {layer(name) for name in found} - ALLOWED["core"]


def test_the_paths_the_earlier_plugin_guide_named_still_import():
    """A fresh interpreter, so that nothing imported before makes the aliases work by accident."""
    import subprocess
    import sys

    code = ("from reweight.errors import DataError\n"
            "from reweight.models import BilevelNet, buffers_preserved\n"
            "from reweight.hypergrad import WeightGradient\n"
            "import reweight, reweight.core.errors\n"
            "assert DataError is reweight.DataError is reweight.core.errors.DataError\n"
            "assert reweight.models.BilevelNet is reweight.BilevelNet\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
