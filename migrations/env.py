"""Alembic environment: one schema for both apps, run on the configured database.

`provisioning db upgrade` (and the embedded SQLite start-up) call Alembic with the
database URL in `config.attributes["url"]`; migrations run on a synchronous connection
borrowed from the async engine.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

# Both apps' tables, declared on their one metadata: importing the two model sets is
# what puts every table before autogenerate.
import control_center.store.models  # noqa: F401
import orchestrator.store.models  # noqa: F401
from orchestrator.store.base import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:  # also when a migration refuses: no connection left to the collector
        await engine.dispose()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    asyncio.run(_run_async(context.config.attributes["url"]))


if context.is_offline_mode():
    context.configure(url=context.config.attributes["url"], target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
