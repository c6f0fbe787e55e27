"""Retention: old events and finished workflows are pruned, in small batches.

Each batch is its own short transaction, so pruning never holds a long lock against the
executor. A finished workflow is kept while a checkpoint older than its end exists: a
rollback to that checkpoint may still need to undo its tasks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.store.models import Checkpoint, Event, Task, WebhookDelivery, Workflow

FINISHED = ("Completed", "Failed", "Cancelled", "RolledBack")


async def prune(
    engine: AsyncEngine,
    *,
    events_days: float | None,
    workflows_days: float | None,
    batch_size: int,
) -> dict[str, int]:
    """Delete what is past retention (None: keep that kind); return how many rows of
    each kind went."""
    removed = {"events": 0, "workflows": 0, "webhook_deliveries": 0}
    if events_days is not None:
        await _prune_events(engine, utcnow() - timedelta(days=events_days), batch_size, removed)
    if workflows_days is not None:
        await _prune_workflows(
            engine, utcnow() - timedelta(days=workflows_days), batch_size, removed
        )
    return removed


async def _prune_events(
    engine: AsyncEngine, event_cutoff: datetime, batch_size: int, removed: dict[str, int]
) -> None:
    while True:
        async with engine.begin() as connection:
            seqs = select(Event.seq).where(Event.at < event_cutoff).limit(batch_size)
            done = (await connection.execute(delete(Event).where(Event.seq.in_(seqs)))).rowcount
        removed["events"] += done
        if done < batch_size:
            break
    while True:
        async with engine.begin() as connection:
            ids = (
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.created_at < event_cutoff,
                    WebhookDelivery.status != "pending",
                )
                .limit(batch_size)
            )
            done = (
                await connection.execute(delete(WebhookDelivery).where(WebhookDelivery.id.in_(ids)))
            ).rowcount
        removed["webhook_deliveries"] += done
        if done < batch_size:
            break


async def _prune_workflows(
    engine: AsyncEngine, workflow_cutoff: datetime, batch_size: int, removed: dict[str, int]
) -> None:
    async with engine.connect() as connection:
        oldest_checkpoint = (
            await connection.execute(select(func.min(Checkpoint.created_at)))
        ).scalar()
    if oldest_checkpoint is not None:
        workflow_cutoff = min(workflow_cutoff, oldest_checkpoint)
    while True:
        async with engine.begin() as connection:
            ids = (
                select(Workflow.id)
                .where(Workflow.status.in_(FINISHED), Workflow.completed_at < workflow_cutoff)
                .limit(max(1, batch_size // 10))
            )
            chosen = list((await connection.execute(ids)).scalars())
            if chosen:
                # Tasks and their edges go with the workflow (ON DELETE CASCADE).
                await connection.execute(delete(Task).where(Task.workflow_id.in_(chosen)))
                await connection.execute(delete(Workflow).where(Workflow.id.in_(chosen)))
        removed["workflows"] += len(chosen)
        if not chosen:
            break


async def sizes(engine: AsyncEngine) -> dict[str, int]:
    """Rows kept, per kind, for /state/statistics."""
    async with engine.connect() as connection:
        counts = {}
        for name, model in (
            ("events", Event),
            ("workflows", Workflow),
            ("tasks", Task),
            ("webhook_deliveries", WebhookDelivery),
        ):
            query = select(func.count()).select_from(model)
            counts[name] = int((await connection.execute(query)).scalar_one())
    return counts
