"""Opening the database and keeping its schema current.

The embedded SQLite database is created and upgraded on start; any other database
must be upgraded explicitly with `provisioning db upgrade`, and the service refuses to
start on an outdated schema with a message naming that command.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio.to_thread
import msgspec
import sqlalchemy
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from orchestrator.data_dir import private_data_dir

if TYPE_CHECKING:
    from alembic.config import Config

#: The handle of the database the store's functions take (callers above the store
#: name its type from here, and never import SQLAlchemy).
__all__ = ["AsyncEngine", "DatabaseError", "shown_url"]

#: What a failed database call raises, for callers above the store to catch.
DatabaseError = SQLAlchemyError


def shown_url(url: str) -> str:
    """A database URL as it may be shown: without its password."""
    return make_url(url).render_as_string(hide_password=True)


R = TypeVar("R")

MIGRATIONS = Path(__file__).resolve().parent.parent.parent / "migrations"


class _SqliteSettings(Protocol):
    @property
    def synchronous(self) -> str: ...


class _ExecutorSettings(Protocol):
    @property
    def worker_limit(self) -> int: ...


class DatabaseSettings(Protocol):
    """What opening the database needs of the settings (`orchestrator.settings.Settings`
    has it; the store does not import the settings)."""

    @property
    def data_dir(self) -> str: ...

    @property
    def resolved_database_url(self) -> str: ...

    @property
    def is_sqlite(self) -> bool: ...

    @property
    def sqlite(self) -> _SqliteSettings: ...

    @property
    def executor(self) -> _ExecutorSettings: ...


class SchemaNotCurrent(Exception):
    """The database's schema is not the one this version of the code expects."""


def _sqlite_pragmas(engine: Engine, settings: DatabaseSettings) -> None:
    synchronous = settings.sqlite.synchronous.upper()

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


#: JSON columns are written and read with msgspec: several times faster than the json
#: module, and a task's transitions write several (tests/perf/bench_executor.py).
JSON_CODEC: dict[str, Any] = {
    "json_serializer": _encode_json,
    "json_deserializer": msgspec.json.decode,
}


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    url = settings.resolved_database_url
    if settings.is_sqlite:
        private_data_dir(settings.data_dir)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **JSON_CODEC)
        _sqlite_pragmas(engine.sync_engine, settings)
        return engine
    # Sized for a worker's concurrent attempts (each records its handle and its end):
    # connections past pool_size are opened and closed per use, which costs more than
    # the statements they run.
    pool = max(10, settings.executor.worker_limit // 2 + 4)
    # No pre-ping: it costs a round trip per transaction, a fifth of a worker's. A
    # connection broken by a database restart fails its statement once and the pool
    # then replaces every older connection (SQLAlchemy's disconnect handling). Last in,
    # first out: the connection just used is the one warm on both sides (its backend
    # process's caches, its prepared statements and plans).
    return create_async_engine(
        url,
        pool_size=pool,
        max_overflow=pool,
        pool_recycle=1800,
        pool_use_lifo=True,
        **JSON_CODEC,
    )


class RoundTrips:
    """The requests one process's engine sent to PostgreSQL and waited for: each
    statement, each BEGIN, COMMIT and ROLLBACK (none in autocommit), and each first
    prepare of a statement on a connection (asyncpg prepares every statement once per
    connection). `count_round_trips` keeps it; `/metrics` shows it as
    `orchestrator_database_round_trips_total`."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


def count_round_trips(engine: AsyncEngine) -> RoundTrips:
    counter = RoundTrips()
    sync = engine.sync_engine

    def transactional(connection: Connection) -> bool:
        options = connection.get_execution_options()
        return options.get("isolation_level") != "AUTOCOMMIT"

    @event.listens_for(sync, "before_cursor_execute")
    def _statement(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        counter.count += 1
        dbapi_connection = connection.connection.dbapi_connection
        cache = getattr(dbapi_connection, "_prepared_statement_cache", None)
        if cache is not None and statement not in cache:
            counter.count += 1  # asyncpg's Parse/Describe first

    @event.listens_for(sync, "begin")
    def _begin(connection: Connection) -> None:
        if transactional(connection):
            counter.count += 1

    @event.listens_for(sync, "commit")
    @event.listens_for(sync, "rollback")
    def _end(connection: Connection) -> None:
        if transactional(connection):
            counter.count += 1

    return counter


def create_writer_engine(settings: DatabaseSettings) -> Engine:
    """For the embedded SQLite store, the synchronous engine the journal writes with from
    its own thread (one connection, kept open)."""
    if not settings.is_sqlite:
        raise ValueError("the journal writes the embedded SQLite store only")
    url = settings.resolved_database_url.replace("sqlite+aiosqlite://", "sqlite://", 1)
    engine = sqlalchemy.create_engine(
        url,
        poolclass=StaticPool,
        connect_args={"timeout": 30, "check_same_thread": False},
        **JSON_CODEC,
    )
    _sqlite_pragmas(engine, settings)
    return engine


def alembic_config(url: str) -> Config:
    # Alembic is imported where a migration runs or is listed, not at every start: a
    # start on a current schema reads its revision with one query (`ensure_schema`).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["url"] = url
    return config


def head_revision() -> str | None:
    """The newest schema revision this version of the code has (Alembic's reading)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


#: Each migration is `versions/NNNN_<what>.py` with revision "NNNN" (a test holds every
#: file to it), so the newest revision is the highest prefix: read without Alembic.
_NUMBERED = re.compile(r"^(\d{4})_\w+\.py$")


def newest_revision() -> str | None:
    """`head_revision`, from the migrations' file names: what a start compares with."""
    numbers = [
        m.group(1) for p in (MIGRATIONS / "versions").iterdir() if (m := _NUMBERED.match(p.name))
    ]
    return max(numbers, default=None)


def _current_revision(connection: Connection) -> str | None:
    """The revision Alembic recorded in `alembic_version` (None: never migrated)."""
    if not sqlalchemy.inspect(connection).has_table("alembic_version"):
        return None
    found = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return found[0] if len(found) == 1 else None


def _upgrade_on(connection: Connection, url: str) -> None:
    from alembic import command

    config = alembic_config(url)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision (idempotent)."""
    url = engine.url.render_as_string(hide_password=False)
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade_on, url)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's schema revision (None: never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_revision)


@contextlib.asynccontextmanager
async def _migration_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """An exclusive lock on `<database file>.migrating`, held while the block runs (no
    lock for an in-memory database). Waiting for it does not block the event loop."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    with open(f"{database}.migrating", "a") as lock:  # noqa: ASYNC230 (a local file, once)
        await anyio.to_thread.run_sync(fcntl.flock, lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class DatabaseUnreachable(Exception):
    """The configured database could not be opened or read."""


async def on_database(settings: DatabaseSettings, work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on an engine of its own for the configured database, closed after;
    a failure to reach or read it becomes `DatabaseUnreachable`."""
    try:
        engine = create_engine(settings)
        try:
            return await work(engine)
        finally:
            await engine.dispose()
    except (SQLAlchemyError, OSError) as exc:
        raise DatabaseUnreachable(str(exc)) from exc


async def ensure_schema(engine: AsyncEngine, settings: DatabaseSettings) -> None:
    """Upgrade the embedded database; refuse to run on an outdated external one.

    The embedded database is read first and upgraded only when it is not at head (a
    restart does not run Alembic's upgrade machinery). The upgrade holds a lock on a
    file beside the database: both apps of `provisioning serve` start at once on a new
    data directory, and SQLite does not make two processes' `CREATE TABLE`s wait for
    each other (the second failed with "table ... already exists")."""
    if settings.is_sqlite:
        if await current_revision(engine) == newest_revision():
            return
        async with _migration_lock(engine):
            await upgrade(engine)  # a no-op when the other process did it meanwhile
        return
    current = await current_revision(engine)
    if current == newest_revision():
        return
    head = head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database schema is at revision {current or 'none'}, this version needs "
            f"{head}; run `provisioning db upgrade` (with the same configuration) first"
        )
