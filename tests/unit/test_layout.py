"""The kernel's import graph has no circle: neither between modules nor between wings (packages)."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    """Every installed module, by its dotted name, from pyproject's package-dir mapping."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules: dict[str, Path] = {}
    for package, folder in config["package-dir"].items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts))
            if package == "ordersync" and parts[0] in ("streams", "producers", "consumers", "schemas"):
                continue
            modules[name.removesuffix(".__init__")] = path
    return modules


def _imports(modules: Mapping[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other ordersync modules (TYPE_CHECKING and function-level ones too)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    found.add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _circles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    return circles


def _wing(module: str, modules: Mapping[str, Path]) -> str:
    """``ordersync.state.store`` -> ``ordersync.state``; a top-level module is the ground floor."""
    parts = module.split(".")
    if len(parts) == 2 and modules[module].name != "__init__.py":
        return "ordersync (ground floor)"
    return ".".join(parts[:2])


def test_no_module_imports_itself_through_others() -> None:
    assert _circles(_imports(_modules())) == []


def test_no_wing_imports_itself_through_others() -> None:
    modules = _modules()
    wings: dict[str, set[str]] = {}
    for module, targets in _imports(modules).items():
        wing = _wing(module, modules)
        wings.setdefault(wing, set()).update(
            _wing(target, modules) for target in targets if _wing(target, modules) != wing
        )
    assert _circles(wings) == []


def test_the_finder_sees_a_circle() -> None:
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
