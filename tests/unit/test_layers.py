"""The floor plan, read from the source (pure AST, nothing imported):

- SQL lives in the stores: SQLAlchemy, Alembic and the database drivers are imported only
  under `orchestrator/store/`, `control_center/store/` and `migrations/`;
- the orchestrator's store is a layer: it imports nothing of the project but itself and
  a few low modules (the clock, ids, errors, rules, specs, fields, event names, the data
  directory), which import nothing higher either;
- no import cycle among the project's modules.

Every import counts: at module level, inside functions, and under `TYPE_CHECKING` (a
layer is a direction, whether or not the import runs).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import pytest

# Reads files only: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("orchestrator", "control_center", "providers", "migrations")
DATABASE_LIBRARIES = {"sqlalchemy", "alembic", "aiosqlite", "asyncpg", "sqlite3", "psycopg"}
SQL_HOMES = ("orchestrator.store", "control_center.store", "migrations")

#: What the orchestrator's store may import of the project, besides itself.
LOW = {
    "orchestrator.clock",
    "orchestrator.ids",
    "orchestrator.errors",
    "orchestrator.rules",
    "orchestrator.specs",
    "orchestrator.fields",
    "orchestrator.event_names",
    "orchestrator.data_dir",
}


@dataclass(frozen=True, slots=True)
class Import:
    module: str  # the importing module
    target: str  # what it names (a module, or a module's attribute)
    line: int


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name -> file, for every module of the packages."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


@functools.cache
def imports(name: str, path: Path) -> tuple[Import, ...]:
    """Every import statement of the module, wherever it is in the file."""
    return tuple(_imports(name, path))


def _imports(name: str, path: Path) -> Iterator[Import]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield Import(name, f"{base}.{alias.name}", node.lineno)


def resolve(target: str, known: dict[str, Path]) -> str | None:
    """The project module an import reaches (`a.b.name` -> `a.b`, or `a.b.name` when
    it is a module); None for a library."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(known: dict[str, Path]) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(known)
    for name, path in known.items():
        for found in imports(name, path):
            target = resolve(found.target, known)
            if target is not None and target != name:
                graph.add_edge(name, target)
    return graph


def cycles(known: dict[str, Path]) -> list[frozenset[str]]:
    graph = import_graph(known)
    return [frozenset(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]


def within(name: str, prefixes: tuple[str, ...] | set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def sql_outside_stores(known: dict[str, Path]) -> list[str]:
    return [
        f"{found.module}:{found.line} imports {found.target}"
        for name, path in known.items()
        if not within(name, SQL_HOMES)
        for found in imports(name, path)
        if found.target.split(".")[0] in DATABASE_LIBRARIES
    ]


def store_imports_above(known: dict[str, Path]) -> list[str]:
    """Imports of project modules, by the store or a low module, that are neither the
    store nor low."""
    below = {n for n in known if within(n, ("orchestrator.store",))} | LOW
    wrong = []
    for name in sorted(below & set(known)):
        for found in imports(name, known[name]):
            target = resolve(found.target, known)
            if target is None or target in below or target == "orchestrator":
                continue
            wrong.append(f"{name}:{found.line} imports {target}")
    return wrong


KNOWN = modules(ROOT)


def test_the_low_modules_and_the_sql_homes_exist() -> None:
    """(So that a rename cannot make the checks below pass by finding nothing.)"""
    assert not LOW - set(KNOWN)
    assert {"orchestrator.store.engine", "migrations.env"} <= set(KNOWN)
    assert import_graph(KNOWN).has_edge("orchestrator.service", "orchestrator.store.engine")


def test_sql_libraries_are_imported_only_by_the_stores_and_migrations() -> None:
    found = [line for line in sql_outside_stores(KNOWN)]
    assert not found, "SQL belongs in a store (orchestrator/store/): " + "; ".join(found)


def test_the_store_imports_nothing_above_it() -> None:
    found = store_imports_above(KNOWN)
    assert not found, (
        "the store may import only itself and " + ", ".join(sorted(LOW)) + ": " + "; ".join(found)
    )


def test_no_import_cycles() -> None:
    found = [sorted(c) for c in cycles(KNOWN)]
    assert not found, f"import cycles: {found}"


def test_the_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """Each check, on a small tree that breaks its rule."""
    files = {
        "orchestrator/__init__.py": "",
        "orchestrator/clock.py": "import datetime\n",
        "orchestrator/service.py": "from orchestrator.store import engine\n",
        "orchestrator/api.py": "def f():\n    from sqlalchemy import select\n",
        "orchestrator/store/__init__.py": "",
        "orchestrator/store/engine.py": (
            "import sqlalchemy\nfrom orchestrator.clock import now\n"
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from orchestrator.service import Service\n"
        ),
        "orchestrator/store/models.py": "from . import engine\nfrom .. import clock\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    known = modules(tmp_path, ("orchestrator",))
    assert sql_outside_stores(known) == ["orchestrator.api:2 imports sqlalchemy.select"]
    assert store_imports_above(known) == [
        "orchestrator.store.engine:5 imports orchestrator.service"
    ]
    assert cycles(known) == [frozenset({"orchestrator.service", "orchestrator.store.engine"})]
    graph = import_graph(known)
    assert graph.has_edge("orchestrator.store.models", "orchestrator.store.engine")
    assert graph.has_edge("orchestrator.store.models", "orchestrator.clock")
