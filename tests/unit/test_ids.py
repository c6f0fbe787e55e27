"""Ids sort by creation time."""

from __future__ import annotations

import uuid

import pytest

from orchestrator.ids import new_id

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_ids_are_uuid7_and_strictly_increasing():
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
