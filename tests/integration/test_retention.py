"""Retention prunes old events and finished workflows, keeping what checkpoints need."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from orchestrator.errors import NotFound
from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.checkpoints import create_checkpoint, delete_checkpoint
from orchestrator.store.journal import utcnow
from orchestrator.store.models import Checkpoint, Event, Task, Workflow
from orchestrator.store.retention import prune, sizes
from tests.backend import settings_env


def _spec(name: str) -> WorkflowSpec:
    return WorkflowSpec(
        kind="custom",
        name=name,
        tasks=[
            TaskSpec(name="a", provider="upcloud", action="noop"),
            TaskSpec(name="b", provider="upcloud", action="noop", dependencies=["a"]),
        ],
    )


async def _age(orchestrator: Orchestrator, workflow_id: str, days: float) -> None:
    past = utcnow() - timedelta(days=days)
    async with orchestrator.engine.begin() as connection:
        await connection.execute(
            update(Workflow).where(Workflow.id == workflow_id).values(completed_at=past)
        )
        await connection.execute(
            update(Event).where(Event.workflow_id == workflow_id).values(at=past)
        )


def test_old_records_go_in_batches_and_a_checkpoints_work_stays(tmp_path):
    async def scenario():
        orchestrator = Orchestrator(
            load_settings(
                # No background pruning: the test prunes when it is ready.
                environ=settings_env(
                    tmp_path,
                    PROVISIONING_RETENTION__EVENTS_DAYS="0",
                    PROVISIONING_RETENTION__WORKFLOWS_DAYS="0",
                )
            )
        )
        await orchestrator.start()
        try:
            ids = []
            for name in ("old", "kept-by-checkpoint", "recent"):
                ids.append(await orchestrator.submit(_spec(name)))
                await orchestrator.scheduler.wait(ids[-1])
            await _age(orchestrator, ids[0], 200)
            await _age(orchestrator, ids[1], 150)
            await create_checkpoint(orchestrator.engine, "cp", "")
            async with orchestrator.engine.begin() as connection:  # the checkpoint predates #2
                await connection.execute(
                    update(Checkpoint).values(created_at=utcnow() - timedelta(days=160))
                )
            before = await sizes(orchestrator.engine)
            removed = await prune(
                orchestrator.engine, events_days=30, workflows_days=90, batch_size=2
            )
            after = await sizes(orchestrator.engine)
            async with orchestrator.engine.connect() as connection:
                left = set((await connection.execute(select(Workflow.id))).scalars())
                tasks = set((await connection.execute(select(Task.workflow_id))).scalars())
            return ids, before, removed, after, left, tasks
        finally:
            await orchestrator.stop()

    ids, before, removed, after, left, tasks = asyncio.run(scenario())
    assert left == {ids[1], ids[2]}  # the one ended before the checkpoint is gone
    assert tasks == {ids[1], ids[2]}  # its tasks went with it
    assert removed["workflows"] == 1
    assert removed["events"] >= 2 * 6  # the aged workflows' events, in batches of 2
    assert after["events"] == before["events"] - removed["events"]
    assert after["tasks"] == before["tasks"] - 2


def test_deleting_the_checkpoint_lets_retention_prune_what_it_kept(tmp_path):
    async def scenario():
        orchestrator = Orchestrator(
            load_settings(
                environ=settings_env(
                    tmp_path,
                    PROVISIONING_RETENTION__EVENTS_DAYS="0",
                    PROVISIONING_RETENTION__WORKFLOWS_DAYS="0",
                )
            )
        )
        await orchestrator.start()
        try:
            old = await orchestrator.submit(_spec("old"))
            await orchestrator.scheduler.wait(old)
            await _age(orchestrator, old, 150)
            checkpoint = await create_checkpoint(orchestrator.engine, "cp", "")
            async with orchestrator.engine.begin() as connection:  # it predates `old`'s end
                await connection.execute(
                    update(Checkpoint).values(created_at=utcnow() - timedelta(days=160))
                )
            kept = await prune(
                orchestrator.engine, events_days=None, workflows_days=90, batch_size=10
            )
            await delete_checkpoint(orchestrator.engine, checkpoint["id"])
            with pytest.raises(NotFound):
                await delete_checkpoint(orchestrator.engine, checkpoint["id"])
            pruned = await prune(
                orchestrator.engine, events_days=None, workflows_days=90, batch_size=10
            )
            async with orchestrator.engine.connect() as connection:
                left = set((await connection.execute(select(Workflow.id))).scalars())
                deleted = (
                    (
                        await connection.execute(
                            select(Event.data).where(Event.type == "CheckpointDeleted")
                        )
                    )
                    .scalars()
                    .all()
                )
            return old, kept, pruned, left, deleted, checkpoint
        finally:
            await orchestrator.stop()

    old, kept, pruned, left, deleted, checkpoint = asyncio.run(scenario())
    assert kept["workflows"] == 0  # the checkpoint held it
    assert pruned["workflows"] == 1
    assert old not in left
    assert deleted == [{"checkpoint_id": checkpoint["id"], "name": "cp", "seq": checkpoint["seq"]}]
