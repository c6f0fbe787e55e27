"""PostgreSQL for the tests of this folder: one server, a fresh database per test.

These tests run on PostgreSQL whatever `TEST_DATABASE` says, so they run in
the default (SQLite) pass only; the PostgreSQL pass deselects them (`tests/conftest.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres: PostgresServer) -> str:
    return postgres.new_database()
