"""No import cycles in src/lrfree (issue 21): every ``import`` and ``from ... import`` of the
package's own modules, at module level, inside functions or under ``TYPE_CHECKING``, is an
edge; a cycle fails with its modules named. And the layers point one way: the collectives
(``lrfree.distributed``) import no curvature, the curvature package no rule or optimizer."""

from __future__ import annotations

import ast
from pathlib import Path

import lrfree

ROOT = Path(lrfree.__file__).resolve().parent


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = current.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (a submodule named in ``from X import y``
    counts when ``X.y`` is a module)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node)
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in targets:
                if t in files and t != mod:
                    graph[mod].add(t)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_package():
    g = import_graph()
    assert "lrfree.optimizer" in g["lrfree"] and "lrfree.rules" in g["lrfree.optimizer"]


def test_a_cycle_is_found_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for w in graph[todo.pop()]:
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return seen


def test_collectives_sit_below_curvature_and_curvature_below_the_rules():
    g = import_graph()
    curvature = {m for m in g if m == "lrfree.curvature" or m.startswith("lrfree.curvature.")}
    assert len(curvature) > 1  # a package of several modules
    assert not _reachable(g, "lrfree.distributed") & curvature
    assert "lrfree.distributed" in _reachable(g, "lrfree.curvature.fd")  # its collectives
    above = {m for m in g if m.startswith(("lrfree.rules", "lrfree.optimizer"))}
    for m in curvature:
        assert not _reachable(g, m) & above, m
    # the rules take their curvature from the package, not from each other's modules
    assert "lrfree.curvature" in g["lrfree.rules.layerwise"] & g["lrfree.rules.adler"]


BENCH_LAYERS = [
    ["data", "grids"],
    ["tasks"],
    ["optimizers"],
    ["results"],
    ["plan"],
    ["cost"],
    ["suites"],
    ["loop"],
    ["progress"],
    ["pool"],
    ["report"],
    ["plots"],
    ["pages"],
    ["measure", "cli"],
    ["runner"],
]
"""``lrfree.bench``'s modules, bottom up: a module imports only modules of lower layers
(issue 21: plan <- loop <- pool <- cli; ``report`` reads records, below the command that
writes them; ``runner`` is re-exports for scripts, on top)."""


def test_the_bench_modules_import_one_way():
    graph = import_graph()
    bench = {m.rsplit(".", 1)[1] for m in graph if m.startswith("lrfree.bench.")}
    rank = {m: i for i, layer in enumerate(BENCH_LAYERS) for m in layer}
    assert bench == set(rank), f"place the new bench modules in BENCH_LAYERS: {bench ^ set(rank)}"
    upward = [
        (m, t)
        for m in rank
        for t in (x.removeprefix("lrfree.bench.") for x in graph[f"lrfree.bench.{m}"])
        if t in rank and rank[t] >= rank[m]
    ]
    assert upward == [], f"bench imports against the layers (module, imported): {upward}"
    # the re-exports are for users: nothing in the package imports them
    assert not [m for m, ts in graph.items() if "lrfree.bench.runner" in ts]
    assert "lrfree.bench.cli" in graph["lrfree.cli"]


_FORBIDDEN = ("lrfree.optimizer", "lrfree.directions")


def _forbidden_from_rules(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Per ``lrfree.rules`` module, the forbidden modules it imports directly or through
    others: a rule sees the step through its ``StepContext``, never the optimizer that runs it
    nor the directions (the objective gradient and the decay come with the context)."""
    out = {}
    for mod in sorted(graph):
        if mod == "lrfree.rules" or mod.startswith("lrfree.rules."):
            bad = sorted(
                t
                for t in _reachable(graph, mod)
                if any(t == f or t.startswith(f + ".") for f in _FORBIDDEN)
            )
            if bad:
                out[mod] = bad
    return out


def test_rules_import_neither_the_optimizer_nor_the_directions():
    assert _forbidden_from_rules(import_graph()) == {}


def test_a_rule_importing_the_directions_is_found():
    graph = {
        "lrfree.rules.x": {"lrfree.blocks"},
        "lrfree.blocks": {"lrfree.directions.base"},
        "lrfree.directions.base": set(),
    }
    assert _forbidden_from_rules(graph) == {"lrfree.rules.x": ["lrfree.directions.base"]}
