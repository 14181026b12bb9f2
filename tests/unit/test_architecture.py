"""The package's shape: no import cycle anywhere in ``comet_studio``, and layers that import only downwards.

The imports are read from the source with ``ast`` (nothing is imported, so gradio and ray are not needed).
Every import counts, module-level or inside a function: a function-local import only hides a cycle until the
function runs. Imports under ``if TYPE_CHECKING:`` are left out (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "comet_studio"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, skipping the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = node.orelse
        stack.extend(children)


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports. ``from pkg import sub`` counts as importing ``pkg.sub`` when
    ``sub`` is a module, else as importing ``pkg`` (its ``__init__``)."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = here[:len(here) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem
                       for alias in node.names]
        for target in targets:
            while target and target not in modules:  # `import a.b.c` where c is a name: the nearest module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), shown as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the package's module count
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(c), graph) for c in components]


def _cycle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth-first)."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {start: start}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:  # closed: walk back from node to start
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if nxt not in previous:
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    return component + [component[0]]


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "comet_studio.core.config" in graph
    assert "comet_studio.core.config" in graph["comet_studio.core.model"]


def test_find_cycles_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles in comet_studio:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_tabs_do_not_import_each_other():
    """Each tab builds its UI and binds its events alone; what two tabs share lives outside app/tabs/."""
    graph = import_graph()
    tabs = "comet_studio.app.tabs."
    edges = [f"{a} -> {b}" for a, targets in graph.items() if a.startswith(tabs)
             for b in targets if b.startswith(tabs)]
    assert not edges, "tab-to-tab imports:\n" + "\n".join(sorted(edges))


LAYERS_ABOVE = {
    # package: the packages it must not import (directly or through a function-local import)
    "core": ("engines", "workflows", "viz", "cli", "app"),
    "engines": ("core", "workflows", "viz", "cli", "app"),
    "viz": ("core", "engines", "workflows", "cli", "app"),
    "workflows": ("cli", "app"),
}


def test_layers_import_only_downwards():
    """core is the algorithm alone; engines (where jobs run) and viz (pictures from plain data) stand beside it;
    workflows use all three; cli and app are the shells on top."""
    graph = import_graph()
    edges = []
    for layer, forbidden in LAYERS_ABOVE.items():
        inside = f"{PACKAGE}.{layer}"
        for name, targets in graph.items():
            if name != inside and not name.startswith(inside + "."):
                continue
            edges += [f"{name} -> {target}" for target in sorted(targets)
                      if any(target == f"{PACKAGE}.{above}" or target.startswith(f"{PACKAGE}.{above}.")
                             for above in forbidden)]
    assert not edges, "imports against the layers:\n" + "\n".join(sorted(edges))
