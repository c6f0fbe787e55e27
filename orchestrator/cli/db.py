"""`provisioning db`: the configured database's schema revision, and upgrading it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from orchestrator.cli.common import Failure, Options, pass_options, shown_database
from orchestrator.settings import Settings

if TYPE_CHECKING:  # the store (and SQLAlchemy) is imported when a db command runs
    from orchestrator.store.engine import AsyncEngine

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
        before = await engine.current_revision(db_engine)
        await engine.upgrade(db_engine)
        return before, await engine.current_revision(db_engine)

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
    from orchestrator.store.engine import current_revision, head_revision

    revision = _on_database(options.settings(), current_revision)
    head = head_revision()
    state = "up to date" if revision == head else "run `provisioning db upgrade`"
    click.echo(f"current {revision or 'none'}, head {head} ({state})")


def _on_database(settings: Settings, work: Callable[[AsyncEngine], Awaitable[R]]) -> R:
    """Run `work` on an engine for the configured database; errors become one line."""
    from orchestrator.store.engine import DatabaseUnreachable, on_database

    try:
        return asyncio.run(on_database(settings, work))
    except DatabaseUnreachable as exc:
        raise Failure(f"database {shown_database(settings)}: {exc}") from exc
