"""The Alembic history builds exactly the schema both apps' models describe, and goes back, on
the suite's database (a fresh SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from alembic import command
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.store.engine import alembic_config
from tests import backend
from tests.pg import run_async

T = TypeVar("T")


def _tables(connection: Connection) -> list[str]:
    return inspect(connection).get_table_names()


def _on(url: str, read: Callable[[Connection], T]) -> T:
    async def work() -> T:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return run_async(work)


def test_upgrading_to_head_gives_the_models_schema_and_downgrade_undoes_it(tmp_path):
    url = backend.database_url(tmp_path)  # not upgraded: the test does it
    config = alembic_config(url)
    command.upgrade(config, "head")
    # `alembic check`: autogenerate, on the metadata migrations/env.py gathers from both
    # apps' models, finds nothing to add, change or drop.
    command.check(config)
    command.downgrade(config, "base")
    assert set(_on(url, _tables)) <= {"alembic_version"}
