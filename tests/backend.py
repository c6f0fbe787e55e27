"""The database the suite runs on: the embedded SQLite default, or a real PostgreSQL.

`TEST_DATABASE=postgresql` runs the suite on PostgreSQL 15: one throwaway
server for the session (`tests/pg.py`, started on first use, stopped by `tests/conftest.py`),
and a fresh database for each data directory, so that every app process a test starts
gets its own database, while a restarted process, or the second app of a test that runs
both against one data directory, finds the same database again, as they would find the
same SQLite file. Unlike SQLite, a PostgreSQL database is not upgraded by `serve`: the
helpers here upgrade it (with `orchestrator.store.engine.upgrade`) before it is used.

`./dev test` runs the suite once on each; see docs/quickstart.md.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Executable, text

from tests.pg import PostgresServer, run_async

#: Not a `PROVISIONING_*` name: those are the product's settings, every app the tests
#: start inherits the environment, and the settings refuse a name they do not know.
VARIABLE = "TEST_DATABASE"
BACKENDS = ("sqlite", "postgresql")
BACKEND = os.environ.get(VARIABLE, "").strip().lower() or "sqlite"
if BACKEND not in BACKENDS:
    raise RuntimeError(f"{VARIABLE}={BACKEND!r}: use one of {', '.join(BACKENDS)}")
if "PROVISIONING_TEST_DATABASE" in os.environ:
    raise RuntimeError(f"set {VARIABLE}: the apps read PROVISIONING_* as settings")
ON_POSTGRES = BACKEND == "postgresql"

_server: PostgresServer | None = None
_databases: dict[Path, str] = {}
_upgraded: set[str] = set()


def postgres() -> PostgresServer:
    """The session's PostgreSQL server, started on first use."""
    global _server
    if _server is None:
        _server = PostgresServer().start()
        atexit.register(stop_postgres)  # in case the session ends without its teardown
    return _server


def stop_postgres() -> None:
    global _server
    if _server is not None:
        server, _server = _server, None
        server.stop()


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite+aiosqlite:///{Path(data_dir).resolve() / 'provisioning.db'}"


def database_url(data_dir: Path) -> str:
    """The URL of the database of the apps that run on `data_dir` (not upgraded here)."""
    if not ON_POSTGRES:
        return sqlite_url(data_dir)
    key = Path(data_dir).resolve()
    if key not in _databases:
        _databases[key] = postgres().new_database()
    return _databases[key]


def upgrade(url: str) -> None:
    """Bring the database at `url` to the newest schema, as `provisioning db upgrade`
    does (once per database: it is idempotent, but not free)."""
    if url in _upgraded:
        return
    from sqlalchemy.ext.asyncio import create_async_engine

    from orchestrator.store import engine as store

    async def work() -> None:
        engine = create_async_engine(url)
        try:
            await store.upgrade(engine)
        finally:
            await engine.dispose()

    run_async(work)
    _upgraded.add(url)


def database_env(data_dir: Path, *, upgraded: bool = True) -> dict[str, str]:
    """The `PROVISIONING_*` variables that put an app running on `data_dir` on the
    suite's database: none on SQLite (the embedded default in the data directory), the
    data directory's PostgreSQL database otherwise, upgraded unless told not to."""
    if not ON_POSTGRES:
        return {}
    url = database_url(data_dir)
    if upgraded:
        upgrade(url)
    return {"PROVISIONING_DATABASE_URL": url}


def settings_env(data_dir: Path, **more: str) -> dict[str, str]:
    """An environment for `load_settings` of an in-process app on `data_dir`."""
    return {"PROVISIONING_DATA_DIR": str(data_dir), **database_env(data_dir), **more}


def settings_fields(data_dir: Path) -> dict[str, str]:
    """Fields for `Settings(...)` of an in-process app on `data_dir`."""
    env = database_env(data_dir)
    fields = {"data_dir": str(data_dir)}
    if env:
        fields["database_url"] = env["PROVISIONING_DATABASE_URL"]
    return fields


def fetch(url: str, statement: Executable | str, **params: Any) -> list[dict[str, Any]]:
    """Rows straight from the database at `url`, as dictionaries. Give a statement built
    on the models' tables to get typed values (JSON as objects) on both backends."""
    return _run(url, statement, params, rows=True)


def execute(url: str, statement: Executable | str, **params: Any) -> None:
    """Run one statement on the database at `url` and commit."""
    _run(url, statement, params, rows=False)


def _run(
    url: str, statement: Executable | str, params: Mapping[str, Any], *, rows: bool
) -> list[dict[str, Any]]:
    from sqlalchemy.ext.asyncio import create_async_engine

    query = text(statement) if isinstance(statement, str) else statement

    async def work() -> list[dict[str, Any]]:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                result = await connection.execute(query, dict(params))
                return [dict(row) for row in result.mappings()] if rows else []
        finally:
            await engine.dispose()

    return run_async(work)


_STORAGE_BACKEND = re.compile(r"^storage_backend: sqlite$", re.MULTILINE)
_batches: Path | None = None


def example_batches(repo: Path) -> Path:
    """The example batches' directory, or on PostgreSQL a copy of it whose batches name
    that `storage_backend` (another store would add a warning to the answer)."""
    global _batches
    examples = repo / "examples" / "batches"
    if not ON_POSTGRES:
        return examples
    if _batches is None:
        copy = Path(tempfile.mkdtemp(prefix="provisioning-batches-"))
        atexit.register(shutil.rmtree, copy, ignore_errors=True)
        for source in examples.iterdir():
            adapted = _STORAGE_BACKEND.sub("storage_backend: postgresql", source.read_text())
            (copy / source.name).write_text(adapted)
        _batches = copy
    return _batches
