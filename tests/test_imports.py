"""No import cycles in src/lrfree (issue 21): every ``import`` and ``from ... import`` of the
package's own modules, at module level, inside functions or under ``TYPE_CHECKING``, is an
edge; a cycle fails with its modules named."""

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
