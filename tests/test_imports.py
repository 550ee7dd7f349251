"""The modules of dask_hizt import one another without cycles.

Every import counts: module level, inside functions, and under
``TYPE_CHECKING`` (a cycle there still means two modules that cannot be
understood, or moved, one without the other).
"""

from __future__ import annotations

import ast
from pathlib import Path

import dask_hizt

PACKAGE = "dask_hizt"
SOURCE = Path(dask_hizt.__file__).parent


def _module(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imported(node: ast.Import | ast.ImportFrom, modules: set[str]) -> set[str]:
    """The dask_hizt modules one import statement (of the package's top
    level: it has no subpackages) makes the importing module depend on."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in modules}
    if node.level == 0 and node.module is not None:
        base = node.module
    elif node.level == 1:
        base = PACKAGE if node.module is None else f"{PACKAGE}.{node.module}"
    else:
        return set()  # outside the package
    if base not in modules:
        return set()
    if base != PACKAGE:
        return {base}
    # ``from . import x``: the submodule x, or a name of the package itself
    return {
        f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in modules else PACKAGE
        for a in node.names
    }


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    """Module -> the dask_hizt modules it imports, anywhere in its text."""
    files = {_module(p): p for p in sorted(source.glob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                deps |= _imported(node, modules)
        deps.discard(name)
        # a submodule always runs the package's __init__ first; that edge is
        # no dependency of the submodule's own
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("from . import a\n")
    (tmp_path / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
    )
    (tmp_path / "b.py").write_text("def f():\n    from . import c\n")
    (tmp_path / "c.py").write_text("import dask_hizt.a\nfrom . import thing\n")
    graph = import_graph(tmp_path)
    assert graph == {
        PACKAGE: {f"{PACKAGE}.a"},
        f"{PACKAGE}.a": {f"{PACKAGE}.b"},
        f"{PACKAGE}.b": {f"{PACKAGE}.c"},
        f"{PACKAGE}.c": {f"{PACKAGE}.a", PACKAGE},
    }
    assert cycles(graph) == [[PACKAGE, *(f"{PACKAGE}.{m}" for m in "abc")]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 20  # the package's modules were found
    assert cycles(graph) == []
