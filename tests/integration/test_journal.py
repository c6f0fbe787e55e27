"""The journal's SQLite writes store rows exactly as SQLAlchemy itself stores them."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, update
from sqlalchemy.exc import IntegrityError

from orchestrator.specs import TaskDefaults, TaskSpec, task_row
from orchestrator.store.engine import _upgrade_on
from orchestrator.store.journal import (
    TASK_STATE_COLUMNS,
    Journal,
    JournalError,
    _Batch,
    _SqliteWrites,
    _write,
    insert_many,
)
from orchestrator.store.models import Event, Task, Workflow

# The journal writes the embedded SQLite store only, whatever the suite's database.
pytestmark = pytest.mark.backend_independent

NOW = datetime(2026, 11, 25, 21, 4, 26, 60858, tzinfo=UTC)


def _workflow() -> dict[str, Any]:
    return {
        "id": "w1",
        "kind": "custom",
        "name": "w",
        "status": "Running",
        "parallel_limit": 8,
        "spec": {"ünï": ["✓"]},
        "created_at": NOW,
    }


def _task(task_id: str) -> dict[str, Any]:
    spec = TaskSpec(name=task_id, provider="local", action="run")
    return {**task_row(spec, task_id, "w1", 0, TaskDefaults()), "created_at": NOW}


STATES: list[dict[str, Any]] = [
    {
        "status": "Running",
        "attempts": 2,
        "progress": 12.5,
        "output": "ünïcode ✓\n",
        "error": None,
        "result": None,
        "not_before": NOW + timedelta(seconds=5),
        "lease_owner": "worker-1",
        "lease_expires_at": None,
        "handle": {"pid": 42, "pgid": 42, "started_between": [1, 2]},
        "started_at": NOW.astimezone(timezone(timedelta(hours=-5))),  # stored as UTC
        "completed_at": None,
    },
    {
        "status": "Completed",
        "attempts": 1,
        "progress": 100.0,
        "output": "",
        "error": "an earlier error",
        "result": {"exit_code": 0, "nested": {"list": [1, 2.5, None, "x"]}},
        "not_before": None,
        "lease_owner": None,
        "lease_expires_at": NOW,
        "handle": None,
        "started_at": NOW,
        "completed_at": NOW + timedelta(microseconds=1),
    },
]
EVENTS: list[dict[str, Any]] = [
    {"at": NOW, "type": "TaskStatusChanged", "workflow_id": "w1", "task_id": "t1", "data": {}},
    {
        "at": NOW.astimezone(timezone(timedelta(hours=2))),
        "type": "WorkflowStatusChanged",
        "workflow_id": None,
        "task_id": None,
        "data": {"status": "Running", "ünï": ["✓", 1, None]},
    },
]


@pytest.mark.parametrize("state", STATES, ids=["running", "completed"])
def test_task_and_event_rows_match_what_sqlalchemy_writes(tmp_path: Path, state: dict) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        _upgrade_on(connection, url)
        connection.execute(insert(Workflow), [_workflow()])
        connection.execute(insert(Task), [_task("by-journal"), _task("by-sqlalchemy")])
        values = {c: state[c] for c in TASK_STATE_COLUMNS}
        connection.execute(update(Task).where(Task.id == "by-sqlalchemy").values(values))
        connection.execute(insert(Event), EVENTS)
    batch = _Batch(
        tasks={"by-journal": dict(state)},
        workflows=[],
        events=[dict(event) for event in EVENTS],
        released=[],
        released_soft=[],
        resources=[],
        new_tasks=[],
        new_edges=[],
    )
    with engine.begin() as connection:
        _write(connection, batch, None, _SqliteWrites(engine.dialect))
    engine.dispose()

    raw = sqlite3.connect(tmp_path / "db.sqlite")
    columns = ", ".join(TASK_STATE_COLUMNS)
    rows = dict((row[0], row[1:]) for row in raw.execute(f"SELECT id, {columns} FROM tasks"))
    assert rows["by-journal"] == rows["by-sqlalchemy"]
    events = raw.execute("SELECT at, type, workflow_id, task_id, data FROM events ORDER BY seq")
    written = events.fetchall()
    raw.close()
    assert written[:2] == written[2:]


def test_rows_inserted_through_a_prepared_statement_match_sqlalchemy_inserts(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine(url)
    spec = TaskSpec(
        name="t",
        provider="local",
        action="run",
        params={"command": "true", "args": ["ü", 1.5, None]},
        timeout=12.5,
    )
    row = {**task_row(spec, "x", "w1", 3, TaskDefaults()), "created_at": NOW}
    with engine.begin() as connection:
        _upgrade_on(connection, url)
        connection.execute(insert(Workflow), [_workflow()])
        insert_many(connection, Task, [{**row, "id": "by-journal", "name": "a"}])
        connection.execute(insert(Task), [{**row, "id": "by-sqlalchemy", "name": "a"}])
        insert_many(connection, Task, [])  # nothing, not a row of defaults
    engine.dispose()
    raw = sqlite3.connect(tmp_path / "db.sqlite")
    rows = {r[0]: r[1:] for r in raw.execute("SELECT * FROM tasks")}
    raw.close()
    assert len(rows) == 2
    assert rows["by-journal"] == rows["by-sqlalchemy"]


def _started_journal(tmp_path: Path) -> tuple[Journal, Engine]:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        _upgrade_on(connection, url)
    journal = Journal(engine)
    journal.start()
    return journal, engine


def test_a_batch_that_cannot_be_written_stops_the_journal_and_says_why(tmp_path: Path) -> None:
    async def scenario() -> None:
        journal, _engine = _started_journal(tmp_path)
        journal.event("Fine", {"n": 1})
        await journal.flush()
        assert journal.commits == 1 and not journal.failed
        journal.event("Broken", {"not json": object()})  # the batch fails to bind
        with pytest.raises(JournalError, match="could not persist transitions"):
            await journal.flush()
        assert journal.failed
        journal.event("After", {})
        with pytest.raises(JournalError, match="has stopped"):
            await journal.flush()
        with pytest.raises(JournalError):
            await journal.close()

    asyncio.run(scenario())
    raw = sqlite3.connect(tmp_path / "db.sqlite")
    types = [row[0] for row in raw.execute("SELECT type FROM events ORDER BY seq")]
    raw.close()
    assert types == ["Fine"]  # nothing of the failed batch, nothing after it


def test_a_job_that_fails_fails_alone(tmp_path: Path) -> None:
    def duplicate_workflow(connection: Connection) -> None:
        row = {**_workflow(), "id": "w2"}
        connection.execute(insert(Workflow), [row])
        connection.execute(insert(Workflow), [row])  # the same id again

    async def scenario() -> None:
        journal, _engine = _started_journal(tmp_path)
        with pytest.raises(IntegrityError):
            await journal.write(duplicate_workflow)
        assert not journal.failed
        journal.event("Fine", {})
        await journal.flush()
        await journal.close()

    asyncio.run(scenario())
    raw = sqlite3.connect(tmp_path / "db.sqlite")
    workflows = raw.execute("SELECT count(*) FROM workflows").fetchone()[0]
    events = raw.execute("SELECT type FROM events").fetchall()
    raw.close()
    assert workflows == 0  # the job's transaction was rolled back whole
    assert events == [("Fine",)]
