"""Imports go down, never up and never in a circle: the graph is built from the source with `ast`.

Layers, top to bottom: `api` → `schema` and `jobs` → `models`; `seeds` may use `models` and is used
by `api` (the command line); `migrations` stand alone (they may read the enums of `models`, nothing
imports them). Every import statement counts, wherever it stands (module level, inside a function,
under `TYPE_CHECKING`): an import moved into a function to hide a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "schema", "jobs", "models", "seeds", "migrations")

# Which top-level packages each package may import (itself included).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "api": frozenset({"api", "schema", "jobs", "models", "seeds"}),
    "schema": frozenset({"schema", "models"}),
    "jobs": frozenset({"jobs", "models"}),
    "seeds": frozenset({"seeds", "models"}),
    "models": frozenset({"models"}),
    "migrations": frozenset({"migrations", "models"}),
}

# Cycles not broken yet, each with why. The test fails when one of them no longer exists exactly as
# written here (so the list only shrinks: remove or narrow the entry) and when any other cycle appears.
ALLOWED_CYCLES: dict[frozenset[str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.source} -> {self.target}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            modules[module_name(path, root)] = path
    return modules


def _resolve(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules, or None if it is not ours."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, root: Path, modules: Mapping[str, Path]) -> list[Edge]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    relative_path = str(path.relative_to(root))
    edges: list[Edge] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                base_parts = package[: len(package) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.append(submodule if submodule in modules else base)
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved is not None and resolved != module:
                edges.append(Edge(module, resolved, relative_path, node.lineno))
    return edges


def build_graph(root: Path, packages: Iterable[str]) -> list[Edge]:
    modules = find_modules(root, packages)
    return [edge for module, path in modules.items() for edge in imports_of(module, path, root, modules)]


def upward_edges(edges: Iterable[Edge]) -> list[Edge]:
    return [
        edge
        for edge in edges
        if edge.target.split(".")[0] not in MAY_IMPORT.get(edge.source.split(".")[0], frozenset())
    ]


def cycles(edges: Iterable[Edge]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterable[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component: set[str] = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(frozenset(component))
    return found


def describe(component: frozenset[str], edges: Iterable[Edge]) -> str:
    inside = sorted(
        {edge for edge in edges if edge.source in component and edge.target in component},
        key=lambda edge: (edge.path, edge.line, edge.target),
    )
    return f"cycle among {sorted(component)}:\n" + "\n".join(f"    {edge}" for edge in inside)


EDGES = build_graph(ROOT, PACKAGES)


def test_the_graph_is_not_empty() -> None:
    assert len(EDGES) > 300, f"only {len(EDGES)} import edges found: is the graph built from the right place?"
    sources = {edge.source.split(".")[0] for edge in EDGES}
    assert sources >= {"api", "schema", "jobs", "models", "seeds", "migrations"}


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "a.py").write_text("from models import b\n")
    (tmp_path / "models" / "b.py").write_text("def later():\n    from .c import x\n")
    (tmp_path / "models" / "c.py").write_text("import models.a\nx = 1\n")
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "__init__.py").write_text("")
    (tmp_path / "models" / "d.py").write_text("from schema import thing\n")
    edges = build_graph(tmp_path, ("models", "schema"))
    assert cycles(edges) == [frozenset({"models.a", "models.b", "models.c"})]
    assert [(e.source, e.target, e.path, e.line) for e in upward_edges(edges)] == [
        ("models.d", "schema", "models/d.py", 1)
    ]


def test_no_import_goes_up() -> None:
    bad = upward_edges(EDGES)
    assert not bad, "imports going up a layer:\n" + "\n".join(str(edge) for edge in bad)


def test_no_import_cycles_beyond_the_allowlist() -> None:
    found = cycles(EDGES)
    new = [component for component in found if component not in ALLOWED_CYCLES]
    gone = [component for component in ALLOWED_CYCLES if component not in found]
    problems = [describe(component, EDGES) for component in new]
    problems += [f"allowlisted cycle no longer exists as written, shrink ALLOWED_CYCLES: {sorted(c)}" for c in gone]
    assert not problems, "\n\n".join(problems)
