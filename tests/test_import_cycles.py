"""No import cycles among parcelzarr's modules, function-local and TYPE_CHECKING imports
included: every module's imports are read with :mod:`ast` (not by importing it), so an
import hidden inside a function counts as much as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Source folder -> the package it is installed as (pyproject's package-dir).
PACKAGES = {
    "src/parcelzarr": "parcelzarr",
    "ingest": "parcelzarr.ingest",
    "query": "parcelzarr.query",
    "stores": "parcelzarr.stores",
}


def _modules() -> dict[str, Path]:
    """Module name -> file, for every module of the package."""
    out: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()

    def resolve(target: str) -> str | None:
        # the longest known module the dotted name starts with (a name imported from a
        # module is an attribute of it, not a module)
        while target and target not in known:
            target = target.rpartition(".")[0]
        return target or None

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t.startswith("parcelzarr") and (hit := resolve(t)) is not None and hit != name:
                found.add(hit)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_the_graph_sees_function_local_imports() -> None:
    """The checker itself: an import inside a function is an edge."""
    graph = _graph()
    # cli imports the query package inside its command functions only
    assert "parcelzarr.query" in graph["parcelzarr.cli"]
    assert "parcelzarr.query._store" in graph["parcelzarr.query"]


#: Cycles wholly inside these packages are not checked yet: ingest/ and stores/ are being
#: reorganised on their own branch (issue 10), which is to remove stores._errors <->
#: stores._retry (a function-local import of ``is_transient``); empty this then.
NOT_YET = ("parcelzarr.ingest", "parcelzarr.stores")


def test_no_import_cycles() -> None:
    cycles = [c for c in _cycles(_graph()) if not all(m.startswith(NOT_YET) for m in c)]
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_distributed_does_not_reach_the_store_facade() -> None:
    """The scale-out path takes a location, a request and parcels: it never needs the
    :class:`ParcelStore` façade that calls it, directly or through another module."""
    graph = _graph()
    seen, todo = set(), ["parcelzarr.query._distributed"]
    while todo:
        for w in graph[todo.pop()] - seen:
            seen.add(w)
            todo.append(w)
    assert "parcelzarr.query._store" not in seen
