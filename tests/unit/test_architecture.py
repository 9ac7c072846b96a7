"""Import rules of src/noetl (SYSTEM.md §2), read from the source with `ast`.

Every import statement counts, wherever it is (module level, inside a function, under
`if TYPE_CHECKING:`), because a lazy import is still a dependency.

(a) `noetl.engine`, `noetl.dsl` and `noetl.template` are pure: they import no I/O module (drivers,
    sockets, processes, asyncio) and none of the adapter layers (store, bus, tools, worker, ...).
(b) No import cycles among noetl modules. An edge goes to the imported module: `import a.b.c` to
    `a.b.c`; `from a.b import c` to `a.b.c` when that is a module, else to `a.b`. No implicit edge
    to parent packages. Each cycle is reported as a strongly connected component.
(c) No private name (`_x`) is imported from a module of another top-level subpackage
    (`noetl.worker` importing `noetl.runtime.local._close_tool_resources`); within the same
    subpackage it is allowed.

The checker itself is tested on a small synthetic package first, so a pass on the real source
means the rules hold, not that the checker found nothing to look at.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

PURE_PACKAGES = ("noetl.engine", "noetl.dsl", "noetl.template")
IO_MODULES = (
    # drivers and network clients
    "sqlite3",
    "psycopg",
    "psycopg2",
    "psycopg_pool",
    "asyncpg",
    "duckdb",
    "httpx",
    "requests",
    "aiohttp",
    "urllib3",
    "urllib.request",
    "http.client",
    "http.server",
    "nats",
    "socket",
    "socketserver",
    "ssl",
    "select",
    "selectors",
    # processes and event loops
    "subprocess",
    "multiprocessing",
    "asyncio",
    # servers
    "fastapi",
    "starlette",
    "uvicorn",
    # the adapter layers of noetl itself
    "noetl.store",
    "noetl.bus",
    "noetl.tools",
    "noetl.worker",
    "noetl.runtime",
    "noetl.api",
    "noetl.cli",
    "noetl.client",
)


@dataclass(frozen=True)
class Import:
    """One dependency of `source` on `target`, found at `line` of `source`'s file."""

    source: str
    target: str  # absolute dotted name: a noetl module, or any module outside noetl
    line: int
    names: tuple[str, ...] = ()  # for `from target import names`, the names that are not modules


def module_index(root: Path, package: str = "noetl") -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of `package` under `root`."""
    index: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        index[".".join(parts)] = path
    return index


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imports_of(module: str, path: Path, modules: Iterable[str]) -> list[Import]:
    """Every import statement of one module, resolved to absolute targets."""
    known = set(modules)
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(Import(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(module, is_package, node.level, node.module)
            else:
                base = node.module or ""
            plain: list[str] = []
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in known:
                    found.append(Import(module, candidate, node.lineno))
                else:
                    plain.append(alias.name)
            if plain or not node.names:
                found.append(Import(module, base, node.lineno, tuple(plain)))
    return found


def all_imports(root: Path, package: str = "noetl") -> list[Import]:
    index = module_index(root, package)
    return [imp for name, path in index.items() for imp in imports_of(name, path, index)]


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def io_violations(imports: Iterable[Import], pure: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """(a) imports of forbidden modules by modules of the pure packages."""
    pure, forbidden = tuple(pure), tuple(forbidden)
    return sorted(
        f"{imp.source} imports {imp.target} (line {imp.line})"
        for imp in imports
        if any(within(imp.source, p) for p in pure) and any(within(imp.target, f) for f in forbidden)
    )


def module_graph(imports: Iterable[Import], modules: Iterable[str]) -> dict[str, dict[str, int]]:
    """source -> {target: first line} over noetl modules only."""
    known = set(modules)
    graph: dict[str, dict[str, int]] = {name: {} for name in known}
    for imp in imports:
        if imp.target in known:
            edges = graph[imp.source]
            edges[imp.target] = min(edges.get(imp.target, imp.line), imp.line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): every component, each sorted, in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, list[str]]] = [(root, sorted(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph[nxt])))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return sorted(components)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """(b) the components that hold a cycle (more than one module, or a module importing itself)."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


def describe_cycle(component: list[str], graph: dict[str, dict[str, int]]) -> str:
    members = set(component)
    edges = [
        f"    {source} -> {target} (line {line})"
        for source in component
        for target, line in sorted(graph[source].items())
        if target in members
    ]
    return f"cycle among {', '.join(component)}:\n" + "\n".join(edges)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def subpackage(module: str) -> str:
    """`noetl.runtime.local` -> `noetl.runtime`; a top-level module is its own (`noetl.errors`)."""
    return ".".join(module.split(".")[:2])


def private_violations(imports: Iterable[Import]) -> list[str]:
    """(c) private names (or private modules) imported across top-level subpackages."""
    found: list[str] = []
    for imp in imports:
        if not within(imp.target, "noetl") or subpackage(imp.source) == subpackage(imp.target):
            continue
        private = [part for part in imp.target.split(".") if _private(part)]
        private += [name for name in imp.names if _private(name)]
        if private:
            shown = f"{imp.target} import {', '.join(imp.names)}" if imp.names else imp.target
            found.append(f"{imp.source} imports private {', '.join(private)} from {shown} (line {imp.line})")
    return sorted(found)


# ------------------------------------------------------------------------------ the checker itself


def _package(tmp: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp


SYNTHETIC = {
    "noetl/__init__.py": "",
    "noetl/errors.py": "class NoetlError(Exception): ...\n",
    "noetl/engine/__init__.py": "from noetl.engine.core import run\n",
    "noetl/engine/core.py": """
        from noetl.errors import NoetlError
        from . import helpers
        from .helpers import _shared

        def run():
            import sqlite3  # a lazy import of a driver is still an import
            from noetl.store import open_store
            return sqlite3, open_store, NoetlError, helpers, _shared
        """,
    "noetl/engine/helpers.py": "_shared = 1\n",
    "noetl/store/__init__.py": """
        def open_store():
            from noetl.store.sqlite import SQLiteStore  # back to the package: a cycle
            return SQLiteStore
        """,
    "noetl/store/sqlite.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from noetl.store import open_store
        class SQLiteStore: ...
        """,
    "noetl/worker/__init__.py": "",
    "noetl/worker/run.py": """
        from noetl.runtime.local import _close, Runtime
        import noetl.runtime._wiring
        from noetl.worker.util import _helper  # same subpackage: allowed
        """,
    "noetl/worker/util.py": "_helper = 1\n",
    "noetl/runtime/__init__.py": "",
    "noetl/runtime/_wiring.py": "",
    "noetl/runtime/local.py": """
        import noetl.worker.run
        _close = Runtime = None
        """,
}


def test_the_checker_on_a_synthetic_package(tmp_path: Path) -> None:
    root = _package(tmp_path, SYNTHETIC)
    index = module_index(root)
    assert set(index) == {
        "noetl",
        "noetl.errors",
        "noetl.engine",
        "noetl.engine.core",
        "noetl.engine.helpers",
        "noetl.store",
        "noetl.store.sqlite",
        "noetl.worker",
        "noetl.worker.run",
        "noetl.worker.util",
        "noetl.runtime",
        "noetl.runtime._wiring",
        "noetl.runtime.local",
    }
    imports = all_imports(root)
    graph = module_graph(imports, index)
    # `from . import helpers` is an edge to the module; `from .helpers import _shared` to helpers;
    # no implicit edge from noetl.engine.core to its parent package noetl.engine.
    assert graph["noetl.engine.core"] == {
        "noetl.errors": 2,
        "noetl.engine.helpers": 3,
        "noetl.store": 8,
    }
    assert graph["noetl.engine"] == {"noetl.engine.core": 1}
    assert graph["noetl.worker.run"] == {
        "noetl.runtime.local": 2,
        "noetl.runtime._wiring": 3,
        "noetl.worker.util": 4,
    }

    assert io_violations(imports, PURE_PACKAGES, IO_MODULES) == [
        "noetl.engine.core imports noetl.store (line 8)",
        "noetl.engine.core imports sqlite3 (line 7)",
    ]
    assert cycles(graph) == [
        ["noetl.runtime.local", "noetl.worker.run"],
        ["noetl.store", "noetl.store.sqlite"],
    ]
    assert "noetl.store -> noetl.store.sqlite (line 3)" in describe_cycle(
        ["noetl.store", "noetl.store.sqlite"], graph
    )
    assert private_violations(imports) == [
        "noetl.worker.run imports private _close from noetl.runtime.local import _close, Runtime (line 2)",
        "noetl.worker.run imports private _wiring from noetl.runtime._wiring (line 3)",
    ]


def test_a_module_importing_itself_is_a_cycle(tmp_path: Path) -> None:
    root = _package(tmp_path, {"noetl/__init__.py": "", "noetl/solo.py": "def f():\n    import noetl.solo\n"})
    index = module_index(root)
    assert cycles(module_graph(all_imports(root), index)) == [["noetl.solo"]]


# ------------------------------------------------------------------------------ the rules on src/noetl


def test_the_real_source_is_read() -> None:
    index = module_index(SRC)
    assert {"noetl.engine.machine", "noetl.dsl.parser", "noetl.template.render", "noetl.cli.main"} <= set(
        index
    )
    graph = module_graph(all_imports(SRC), index)
    assert sum(len(edges) for edges in graph.values()) > len(index)  # modules do import each other


def test_pure_packages_import_no_io() -> None:
    violations = io_violations(all_imports(SRC), PURE_PACKAGES, IO_MODULES)
    assert violations == [], "the pure packages import I/O:\n" + "\n".join(violations)


def test_no_import_cycles() -> None:
    index = module_index(SRC)
    graph = module_graph(all_imports(SRC), index)
    found = cycles(graph)
    assert found == [], f"{len(found)} import cycle(s):\n" + "\n".join(
        describe_cycle(c, graph) for c in found
    )


def test_no_private_names_across_subpackages() -> None:
    violations = private_violations(all_imports(SRC))
    assert violations == [], "private names imported across subpackages:\n" + "\n".join(violations)
