"""Reading the event log: the rows every consumer (the event stream, a workflow's events
and snapshots, health checks) reads from the last `seq` it saw.

Events are written by the store's writers (`journal.write_events`), each in the
transaction of the change it records; nothing here writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.models import Event


class LoggedEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One row of the log."""

    seq: int
    at: datetime
    #: `TaskStatusChanged`, `WorkflowSubmitted`, … (docs/concepts.md)
    type: str
    workflow_id: str | None
    task_id: str | None
    data: dict[str, Any]


async def read_events(
    engine: AsyncEngine,
    after: int = 0,
    *,
    workflow_id: str | None = None,
    types: Sequence[str] = (),
    limit: int | None = 500,
) -> list[LoggedEvent]:
    """Events with `seq > after`, oldest first, optionally filtered (`limit` None: all)."""
    query = select(Event.__table__).where(Event.seq > after)
    if workflow_id is not None:
        query = query.where(Event.workflow_id == workflow_id)
    if types:
        query = query.where(Event.type.in_(list(types)))
    async with engine.connect() as connection:
        rows = await connection.execute(query.order_by(Event.seq).limit(limit))
        return [LoggedEvent(**row) for row in rows.mappings()]


async def last_seq(engine: AsyncEngine) -> int:
    """The last event's seq (0: none yet): also proves the store answers and the log is
    readable."""
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.max(Event.seq)))).scalar() or 0)
