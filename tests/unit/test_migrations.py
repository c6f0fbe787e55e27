"""The Alembic history builds exactly the schema both apps' models describe, and goes back, on
the suite's database (a fresh SQLite file, or a fresh PostgreSQL database)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.clock import utcnow
from orchestrator.ids import new_id
from orchestrator.specs import TaskDefaults, TaskSpec, task_row
from orchestrator.store.engine import alembic_config
from orchestrator.store.models import Task, Workflow
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


def _workflow_with_tasks(url: str, statuses: list[str]) -> list[str]:
    """A rollback workflow whose tasks all undo one task (of the same workflow, for
    brevity); returns the compensations' ids."""
    workflow_id = new_id()
    backend.execute(
        url,
        insert(Workflow).values(
            id=workflow_id,
            kind="rollback",
            name="r",
            status="Running",
            parallel_limit=1,
            rollback_enabled=False,
            check_mode=False,
            cancel_requested=False,
            spec={},
            created_at=utcnow(),
        ),
    )
    undone = new_id()
    ids = []
    for position, status in enumerate(["Completed", *statuses]):
        spec = TaskSpec(name=f"t{position}", provider="upcloud", action="noop")
        row = task_row(spec, new_id(), workflow_id, position, TaskDefaults())
        if position == 0:
            row["id"] = undone
        else:
            row["compensates"] = undone
            ids.append(row["id"])
        backend.execute(url, insert(Task).values(**{**row, "status": status}))
    return ids


def test_0008_refuses_while_two_compensations_of_one_task_are_in_flight(tmp_path):
    url = backend.database_url(tmp_path)
    config = alembic_config(url)
    command.upgrade(config, "0007")
    pending, running = _workflow_with_tasks(url, ["Pending", "Running"])
    _workflow_with_tasks(url, ["Completed", "Completed", "Pending"])  # as recorded: kept
    with pytest.raises(RuntimeError, match="being undone by two rollbacks at once"):
        command.upgrade(config, "0008")
    assert _on(url, _revision) == "0007"

    backend.execute(url, update(Task).where(Task.id == pending).values(status="Cancelled"))
    command.upgrade(config, "0008")
    assert _on(url, _revision) == "0008"
    with pytest.raises(IntegrityError):  # the index: one in flight per task
        backend.execute(url, update(Task).where(Task.id == pending).values(status="Pending"))
    backend.execute(url, update(Task).where(Task.id == running).values(status="Failed"))
    backend.execute(url, update(Task).where(Task.id == pending).values(status="Pending"))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _policy_names(connection: Connection) -> list[str]:
    return [row[0] for row in connection.execute(text("SELECT name FROM policies"))]


#: The defaults added after the first release, and the revision before each one's.
LATER_DEFAULTS = {"deployment_privacy_policy": "0009", "member_access_policy": "0010"}


@pytest.mark.parametrize("name", sorted(LATER_DEFAULTS))
def test_a_default_policy_added_later_reaches_a_database_seeded_before_it_once(tmp_path, name):
    from control_center.policy_set import seed_default_policies

    url = backend.database_url(tmp_path)
    config = alembic_config(url)
    command.upgrade(config, LATER_DEFAULTS[name])

    async def seed() -> None:
        engine = create_async_engine(url)
        try:
            await seed_default_policies(engine)
        finally:
            await engine.dispose()

    run_async(seed)
    # As a database seeded by an earlier version: without the later default.
    backend.execute(url, text(f"DELETE FROM policies WHERE name = '{name}'"))
    before = _on(url, lambda c: c.execute(text("SELECT version FROM policy_revision")).scalar())
    command.upgrade(config, "head")
    assert name in _on(url, _policy_names)
    after = _on(url, lambda c: c.execute(text("SELECT version FROM policy_revision")).scalar())
    assert after == before + 1  # the apps reload their policies
    # Deleted by an administrator afterwards, it stays deleted: the migration ran once.
    backend.execute(url, text(f"DELETE FROM policies WHERE name = '{name}'"))
    command.upgrade(config, "head")
    run_async(seed)
    assert name not in _on(url, _policy_names)


def test_a_database_not_seeded_yet_gets_the_later_default_with_the_others(tmp_path):
    url = backend.database_url(tmp_path)
    command.upgrade(alembic_config(url), "head")
    assert _on(url, _policy_names) == []  # the first start seeds them all


def test_the_newest_revision_read_from_file_names_is_alembics_head():
    """A start compares the database with `newest_revision` (file names, no Alembic);
    every migration must keep to `NNNN_<what>.py` with revision "NNNN" for it to hold."""
    from alembic.script import ScriptDirectory

    from orchestrator.store.engine import MIGRATIONS, head_revision, newest_revision

    assert newest_revision() == head_revision()
    scripts = ScriptDirectory.from_config(alembic_config(""))
    for revision in scripts.walk_revisions():
        assert revision.path is not None
        assert Path(revision.path).name.startswith(f"{revision.revision}_")
    files = [p for p in (MIGRATIONS / "versions").glob("*.py") if p.name != "__init__.py"]
    assert len(files) == len(list(scripts.walk_revisions()))
