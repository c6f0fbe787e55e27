"""The queries of workers sharing one PostgreSQL database: claims and leases.

A worker claims ready tasks with one statement that picks them under every limit,
locks them with `FOR UPDATE SKIP LOCKED` and marks them `Running` with its id and a
lease. Claims are serialized by a transaction-scoped advisory lock, so the running
counts the limits are checked against cannot change under a claim: the global,
per-workflow and per-provider limits hold across all workers. How an attempt's end is
recorded is `store/endings.py`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.store.journal import write_events
from orchestrator.store.models import Task, Workflow
from orchestrator.store.taskstore import JSON, Limits

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

#: Work may be claimable (a submission, an attempt's end, a cancel): workers wake.
CHANNEL_TASKS = "provisioning_tasks"
#: Events were written without freeing any work (a claim): stream readers wake.
CHANNEL_EVENTS = "provisioning_events"
#: A workflow (the payload) was cancelled: its workers stop its running tasks.
CHANNEL_CANCEL = "provisioning_cancel"
#: pg_advisory_xact_lock key serializing claims ("prov" in ASCII).
CLAIM_LOCK = 0x70726F76

_CLAIM = text(
    """
WITH running AS (
    SELECT workflow_id, provider FROM tasks WHERE status = 'Running'
),
ready AS (
    -- At most parallel_limit ready tasks per active workflow, each found through the
    -- partial index of ready tasks: a claim's cost does not grow with workflow size.
    SELECT t.id, t.workflow_id, t.provider, t.position, w.created_at AS submitted,
           w.parallel_limit, t.in_workflow
    FROM workflows w
    CROSS JOIN LATERAL (
        SELECT c.id, c.workflow_id, c.provider, c.position,
               row_number() OVER (ORDER BY c.position) AS in_workflow
        FROM tasks c
        WHERE c.workflow_id = w.id AND c.status = 'Pending' AND c.pending_dependencies = 0
          AND (c.not_before IS NULL OR c.not_before <= now())
        ORDER BY c.position
        LIMIT w.parallel_limit
    ) t
    WHERE w.status IN ('Pending', 'Running', 'RollingBack') AND NOT w.cancel_requested
),
within_workflow AS (
    -- Under its workflow's limit first, so that tasks a workflow may not start do not
    -- take their provider's places.
    SELECT r.*,
           row_number() OVER (PARTITION BY r.provider ORDER BY r.submitted, r.position)
               AS in_provider
    FROM ready r
    WHERE r.in_workflow + (SELECT count(*) FROM running x WHERE x.workflow_id = r.workflow_id)
              <= r.parallel_limit
),
eligible AS (
    SELECT r.id FROM within_workflow r
    WHERE r.in_provider + (SELECT count(*) FROM running x WHERE x.provider = r.provider)
              <= coalesce((CAST(:provider_limits AS jsonb) ->> r.provider)::int,
                          :provider_limit)
    ORDER BY r.in_workflow, r.submitted, r.position
    LIMIT greatest(0, least(:batch, :global_limit - (SELECT count(*) FROM running)))
),
locked AS (
    SELECT t.id FROM tasks t
    WHERE t.id IN (SELECT id FROM eligible)
      AND t.status = 'Pending' AND t.pending_dependencies = 0
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks
SET status = 'Running', attempts = tasks.attempts + 1, lease_owner = :worker,
    -- The clock now, not the transaction's start: a dependency's end committed while
    -- this claim waited for the lock must not seem to come after this start.
    lease_expires_at = clock_timestamp() + make_interval(secs => :lease),
    started_at = clock_timestamp(),
    not_before = NULL, handle = NULL
FROM locked, workflows w
WHERE tasks.id = locked.id AND w.id = tasks.workflow_id
RETURNING tasks.*, w.check_mode, w.kind AS workflow_kind, w.status AS workflow_status,
    pg_notify('provisioning_events', '') AS notified
"""
)


async def claim(
    engine: AsyncEngine,
    worker: str,
    *,
    batch: int,
    lease: float,
    limits: Limits,
    outbox: Outbox | None,
) -> list[dict[str, Any]]:
    """Claim up to `batch` ready tasks for `worker`; return their rows (`Running`).

    Workflows still `Pending` move to `Running` in the same transaction. Locks are
    taken in the order claim → task rows → workflow rows, which no other transaction
    reverses (`end_attempt` locks a workflow, then its Running or Pending tasks, and
    tasks this claim locked are neither).
    """
    async with engine.begin() as connection:
        await connection.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
        rows = (
            await connection.execute(
                _CLAIM,
                {
                    "worker": worker,
                    "batch": batch,
                    "lease": float(lease),
                    "global_limit": limits.global_limit,
                    "provider_limit": limits.provider_limit,
                    "provider_limits": json.dumps(dict(limits.provider_limits)),
                },
            )
        ).mappings()
        claimed = [dict(row) for row in rows]
        if not claimed:
            return []
        now = utcnow()
        events = [
            event_row(
                "TaskStatusChanged",
                {
                    "task_id": t["id"],
                    "name": t["name"],
                    "status": "Running",
                    "attempt": t["attempts"],
                    "worker": worker,
                },
                t["workflow_id"],
                t["id"],
                now,
            )
            for t in claimed
        ]
        starting = sorted({t["workflow_id"] for t in claimed if t["workflow_status"] == "Pending"})
        if starting:
            started = (
                await connection.execute(
                    update(Workflow)
                    .where(Workflow.id.in_(starting), Workflow.status == "Pending")
                    .values(status="Running", started_at=now)
                    .returning(Workflow.id, Workflow.kind)
                )
            ).all()
            events += [
                event_row(
                    "WorkflowStatusChanged",
                    {"workflow_id": wid, "status": "Running", "kind": kind},
                    wid,
                    None,
                    now,
                )
                for wid, kind in started
            ]
        await connection.run_sync(write_events, events, outbox)
    return claimed


async def record_handle(engine: AsyncEngine, task_id: str, worker: str, handle: JSON) -> None:
    """What the provider needs to stop this attempt later, while the lease is ours."""
    async with engine.begin() as connection:
        await connection.execute(
            update(Task)
            .where(Task.id == task_id, Task.lease_owner == worker, Task.status == "Running")
            .values(handle=handle)
        )


async def heartbeat(
    engine: AsyncEngine, worker: str, task_ids: Sequence[str], lease: float
) -> set[str]:
    """Extend the leases of the tasks `worker` runs; return those it still holds.

    Only the given tasks: one whose end the worker failed to record must see its lease
    expire, so that it is recovered."""
    if not task_ids:
        return set()
    async with engine.begin() as connection:
        rows = await connection.execute(
            update(Task)
            .where(Task.id.in_(list(task_ids)), Task.lease_owner == worker)
            .where(Task.status == "Running")
            .values(lease_expires_at=func.now() + timedelta(seconds=lease))
            .returning(Task.id)
        )
        return {row[0] for row in rows}


async def expired_leases(
    engine: AsyncEngine, *, owner: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Running tasks whose lease has expired (or, with `owner`, every one it holds), with
    their workflow's `check_mode`."""
    query = (
        select(Task.__table__, Workflow.check_mode)
        .join(Workflow, Workflow.id == Task.workflow_id)
        .where(Task.status == "Running")
    )
    if owner is not None:
        query = query.where(Task.lease_owner == owner)
    else:
        query = query.where(Task.lease_expires_at < func.now())
    async with engine.connect() as connection:
        rows = await connection.execute(query.order_by(Task.lease_expires_at).limit(limit))
        return [dict(row) for row in rows.mappings()]


async def next_due(engine: AsyncEngine) -> datetime | None:
    """When the earliest task waiting out a retry delay becomes ready."""
    async with engine.connect() as connection:
        return (
            await connection.execute(
                select(func.min(Task.not_before)).where(
                    Task.status == "Pending",
                    Task.pending_dependencies == 0,
                    Task.not_before > func.now(),
                )
            )
        ).scalar_one_or_none()


async def running_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    select(func.count()).select_from(Task).where(Task.status == "Running")
                )
            ).scalar_one()
        )


async def ready_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (
                await connection.execute(
                    select(func.count())
                    .select_from(Task)
                    .where(Task.status == "Pending", Task.pending_dependencies == 0)
                )
            ).scalar_one()
        )


async def cancel_requested(engine: AsyncEngine, workflow_ids: Sequence[str]) -> set[str]:
    if not workflow_ids:
        return set()
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Workflow.id).where(
                Workflow.id.in_(list(workflow_ids)), Workflow.cancel_requested.is_(True)
            )
        )
        return {row[0] for row in rows}


async def workflow_status(engine: AsyncEngine, workflow_id: str) -> str | None:
    async with engine.connect() as connection:
        return (
            await connection.execute(select(Workflow.status).where(Workflow.id == workflow_id))
        ).scalar_one_or_none()


async def notify(engine: AsyncEngine, channel: str = CHANNEL_TASKS, payload: str = "") -> None:
    async with engine.begin() as connection:
        await notify_in(connection, channel, payload)


async def notify_in(
    connection: AsyncConnection, channel: str = CHANNEL_TASKS, payload: str = ""
) -> None:
    await connection.execute(select(func.pg_notify(channel, payload)))


def event_row(
    type_: str,
    data: JSON,
    workflow_id: str | None,
    task_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    return {"at": at, "type": type_, "workflow_id": workflow_id, "task_id": task_id, "data": data}
