"""The queries of workers sharing one PostgreSQL database: claims and leases.

A worker settles a batch in one call of `provisioning_settle` (migration 0009), one
round trip and one transaction: it records the attempts that completed (their tasks
`Completed`, dependents released, events written) unless that would end their
workflow, then claims ready tasks with one statement that picks them under every
limit, locks them with `FOR UPDATE SKIP LOCKED`, marks them `Running` with the
worker's id and a lease and returns what their provider calls need. Claims are
serialized by a transaction-scoped advisory lock, so the running counts the limits are
checked against cannot change under a claim: the global, per-workflow and per-provider
limits hold across all workers. Every other end (failures, retries, the last task of a
workflow, recoveries) is recorded by `store/endings.py`, one transaction each.

Statements that are a transaction alone run on an engine in autocommit (no BEGIN and
COMMIT round trips): the caller gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
from sqlalchemy import (
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.clock import utcnow
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
_ENCODE = msgspec.json.Encoder().encode

#: A workflow (the payload) has ended: whoever waits for it looks.
CHANNEL_ENDED = "provisioning_ended"

#: Completed attempts recorded and ready tasks claimed in one call: one round trip, one
#: transaction (migration 0009 defines the function). Sent as it is to the driver: the
#: hottest statement of a worker needs nothing of SQLAlchemy's compiling and typing.
_SETTLE = "SELECT * FROM provisioning_settle($1, $2, $3, $4, $5, $6, $7, $8, $9)"
#: The columns of its rows (`provisioning_settled`), in order; JSON ones come as text.
_SETTLED = (
    "kind",
    "id",
    "name",
    "workflow_id",
    "provider",
    "action",
    "params",
    "attempts",
    "timeout",
    "check_mode",
    "compensates",
    "compensation",
    "handle",
    "seq",
    "type",
    "data",
    "at",
)
_JSON_COLUMNS = ("params", "compensation", "handle", "data")
_DECODE = msgspec.json.Decoder().decode


@dataclass(slots=True)
class Completion:
    """A completed attempt of this worker's, for the settle call."""

    task_id: str
    output: str | None
    result: JSON | None


@dataclass(slots=True)
class Settled:
    """What one settle call did."""

    #: Completions recorded (task ids).
    ended: set[str] = field(default_factory=set)
    #: Completions not recorded because they would end their workflow: the caller
    #: records them one by one (`endings.end_attempt`), with the workflow's end.
    deferred: set[str] = field(default_factory=set)
    #: Tasks claimed: their rows, with what the provider call needs.
    claimed: list[dict[str, Any]] = field(default_factory=list)


async def settle(
    connection: SettleConnection,
    engine: AsyncEngine,
    worker: str,
    completions: Sequence[Completion],
    *,
    batch: int,
    lease: float,
    limits: Limits,
    outbox: Outbox | None,
) -> Settled:
    """Record `completions` (the common end: completed, the lease still the worker's,
    its workflow not done) and claim up to `batch` ready tasks for `worker`, under
    every limit, with their events, in one call of `provisioning_settle`.

    In one round trip on the worker's own settle connection when there is no webhook
    outbox to fill (the call is its own transaction); otherwise in a transaction of
    `engine` that also writes the outbox rows of the events it returns. Claims are
    serialized by the transaction-scoped advisory lock `CLAIM_LOCK`, taken first; the
    completions' workflows are locked next, in the order of their ids, then task rows
    (`FOR UPDATE SKIP LOCKED` for the claim). A cancel takes the same lock first, and
    the one-by-one end (`endings.end_attempt`) takes no advisory lock and locks a
    workflow before its tasks: no two of them wait for each other in opposite orders.
    """
    at = utcnow()
    ends = [{"id": c.task_id, "output": c.output, "result": c.result} for c in completions]
    parameters = (
        worker,
        _ENCODE(ends).decode(),
        at,
        batch,
        float(lease),
        limits.global_limit,
        limits.provider_limit,
        _ENCODE(dict(limits.provider_limits)).decode(),
        bool(outbox),
    )
    if outbox:
        async with engine.begin() as transaction:
            rows = _rows((await transaction.exec_driver_sql(_SETTLE, parameters)).all())
            events = [
                event_row(r["type"], r["data"], r["workflow_id"], r["id"], r["at"])
                for r in rows
                if r["kind"] == "event"
            ]
            seqs = [r["seq"] for r in rows if r["kind"] == "event"]
            await transaction.run_sync(partial(outbox.write, events=events, seqs=seqs))
    else:
        rows = _rows(await connection.fetch(_SETTLE, parameters))
    settled = Settled()
    for row in rows:
        kind = row["kind"]
        if kind == "claimed":
            settled.claimed.append(row)
        elif kind == "ended":
            settled.ended.add(row["id"])
        elif kind == "deferred":
            settled.deferred.add(row["id"])
    return settled


class SettleConnection:
    """A worker's own connection for its settle calls, made when first needed and again
    after it broke; one call at a time (the scheduler settles one batch at a time).

    Straight to the driver, outside SQLAlchemy's pool: a checkout, the execution and
    its result cost ten times the driver's own work, on the path of every task. Its
    requests are counted in `round_trips` (the engine's counter does not see them)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self.round_trips = 0

    async def fetch(self, query: str, parameters: Sequence[Any]) -> list[Sequence[Any]]:
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                self._connection = None
                self.round_trips += 1  # (its start-up, counted once)
                self._connection = await asyncpg.connect(
                    self._url, server_settings={"application_name": "provisioning"}
                )
            self.round_trips += 1
            try:
                return list(await self._connection.fetch(query, *parameters))
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                await self.close()
                raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)


def _rows(result: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """The settle's rows as dictionaries, JSON decoded (the engine's connections decode
    it with their codec; the settle connection gives it as text)."""
    rows = []
    for values in result:
        row = dict(zip(_SETTLED, values, strict=True))
        for name in _JSON_COLUMNS:
            if isinstance(row[name], str | bytes):
                row[name] = _DECODE(row[name])
        rows.append(row)
    return rows


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
