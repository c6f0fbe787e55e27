"""`provisioning db`: the configured database's schema revision, and upgrading it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from orchestrator.cli.common import Failure, Options, pass_options, shown_database
from orchestrator.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy is imported when a db command runs, not for every command
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

R = TypeVar("R")


@click.group()
def db() -> None:
    """The database schema (Alembic migrations)."""


@db.command("upgrade")
@pass_options
def upgrade(options: Options) -> None:
    """Bring the configured database to the newest schema (idempotent)."""
    from orchestrator.store import engine

    settings = options.settings()

    async def run(db_engine: AsyncEngine) -> tuple[str | None, str | None]:
        before = await _current_revision(db_engine)
        await engine.upgrade(db_engine)
        return before, await _current_revision(db_engine)

    before, after = _on_database(settings, run)
    where = shown_database(settings)
    if before == after:
        click.echo(f"{where}: already at revision {after} (head)")
    else:
        click.echo(f"{where}: upgraded from revision {before or 'none'} to {after} (head)")


@db.command("current")
@pass_options
def current(options: Options) -> None:
    """Print the database's schema revision and the newest one this version has."""
    from alembic.script import ScriptDirectory

    from orchestrator.store.engine import alembic_config

    revision = _on_database(options.settings(), _current_revision)
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    state = "up to date" if revision == head else "run `provisioning db upgrade`"
    click.echo(f"current {revision or 'none'}, head {head} ({state})")


async def _current_revision(db_engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def read(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async with db_engine.connect() as connection:
        return await connection.run_sync(read)


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on an engine for the configured database; errors become one line."""
    from sqlalchemy.exc import SQLAlchemyError

    from orchestrator.store.engine import create_engine

    async def run() -> R:
        db_engine = create_engine(settings)
        try:
            return await work(db_engine)
        finally:
            await db_engine.dispose()

    try:
        return asyncio.run(run())
    except (SQLAlchemyError, OSError) as exc:
        raise Failure(f"database {shown_database(settings)}: {exc}") from exc
