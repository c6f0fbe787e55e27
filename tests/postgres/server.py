"""Kept for imports of its old place: the server now lives in `tests/pg.py`, shared with
the PostgreSQL pass of the whole suite (`tests/backend.py`)."""

from tests.pg import BIN_DIRS, PostgresServer

__all__ = ["BIN_DIRS", "PostgresServer"]
