"""The package's layering, read from its imports: no module imports one on a higher floor, and no cycles.

Every import counts, at the top of a module or inside a function or a TYPE_CHECKING block: a lazy import is
still a dependency. A module that is not placed on a floor fails the test, so a new module is placed on
purpose. The floors, from the bottom up, are the design: README.md's Layout section walks them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"

# From the bottom up. A module may import modules on its own floor or below; a name ending in "." covers a
# whole subpackage.
FLOORS: list[tuple[str, list[str]]] = [
    (
        "facts and records",
        [
            "paths",
            "owner",
            "procs",
            "versions",
            "specs",
            "results",
            "verify",
            "integrity",
            "rundir",
            "config",
            "configfile",
            "waiting",
        ],
    ),
    (
        "knowledge",
        [
            "pythons",
            "index",
            "fields",
            "scenarios",
            "expectations",
            "differential",
            "compare",
            "fidelity",
            "features._base",
            "server",
        ],
    ),
    ("environments and clients", ["envs", "images", "clients", "serverfork"]),
    ("stores", ["databases", "objectstore", "backends.", "schema", "migration"]),
    ("what a cell's servers run with", ["features."]),
    ("where servers run", ["runtime."]),
    ("the matrix", ["plan", "randomplan"]),
    ("one cell", ["ledger", "clientsteps", "scale", "rolling", "interrupted", "cell"]),
    ("cells as pytest items", ["plugin", "progress"]),
    ("results on disk", ["report", "durations", "table"]),
    ("options", ["options"]),
    ("a run", ["run"]),
    ("commands", ["cli", "bench", "mutants", "installability"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    files = {module_name(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from harness import cell` names a module; `from harness.cell import Cell` a name in one.
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "harness":
                    found.add(target)
        graph[name] = found
    return graph


def floor_of(module: str, floors: list[tuple[str, list[str]]]) -> int | None:
    short = module.removeprefix("harness.")
    for index, (_, members) in enumerate(floors):
        for member in members:
            if short == member or (member.endswith(".") and (short + ".").startswith(member)):
                return index
    return None


def layering_problems(graph: dict[str, set[str]], floors: list[tuple[str, list[str]]]) -> list[str]:
    """Modules on no floor, imports that run up a floor, and import cycles, each named."""
    problems = []
    placed = {m: floor_of(m, floors) for m in graph if m != "harness"}
    problems += [f"{m} is on no floor (place it in tests/test_layers.py FLOORS)"
                 for m, f in sorted(placed.items()) if f is None]  # fmt: skip
    for module, imports in sorted(graph.items()):
        here = placed.get(module)
        for target in sorted(imports):
            there = placed.get(target)
            if here is not None and there is not None and there > here:
                problems.append(
                    f"{module} ({floors[here][0]}) imports {target} ({floors[there][0]}), a floor above"
                )
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules that import each other (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in graph.get(v, ()):
                found.append([*sorted(group), sorted(group)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_imports_only_downwards_and_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20, "the import graph was not read"
    assert "harness.cell" in graph and "harness.results" in graph["harness.cell"]
    assert layering_problems(graph, FLOORS) == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        # A planted upward import: a record module reaching for the cell.
        ({"harness.results": {"harness.cell"}, "harness.cell": {"harness.results"}},
         "harness.results (facts and records) imports harness.cell (one cell), a floor above"),
        # A planted cycle inside one floor.
        ({"harness.ledger": {"harness.clientsteps"}, "harness.clientsteps": {"harness.ledger"}},
         "import cycle: harness.clientsteps -> harness.ledger -> harness.clientsteps"),
        # A planted module nobody placed.
        ({"harness.newthing": set()}, "harness.newthing is on no floor"),
    ],
)  # fmt: skip
def test_a_planted_violation_is_named(graph: dict[str, set[str]], expected: str) -> None:
    problems = layering_problems(graph, FLOORS)
    assert any(expected in p for p in problems), problems


def test_subpackages_are_covered_by_their_floor() -> None:
    assert floor_of("harness.backends.postgres", FLOORS) == floor_of("harness.backends", FLOORS)
    assert floor_of("harness.runtime.docker", FLOORS) == floor_of("harness.runtime", FLOORS)
    assert floor_of("harness.backendsx", FLOORS) is None
