"""The event log's readers: a wake-up signal for live consumers, and the log's shape.

Every event is a row of the `events` table, written in the transaction of the change it
records. Consumers (the WebSocket stream, and later webhooks) do not get events pushed
in memory: they read the table from the last `seq` they saw, and `EventBus` only wakes
them when a commit may have added rows. So a consumer that falls behind costs no memory,
a reconnecting one resumes from its `seq`, and nothing a consumer does can slow the
executor.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.models import Event


class EventBus:
    """A version counter bumped after each commit that wrote events."""

    def __init__(self) -> None:
        self.version = 0
        #: Open event streams per user (the API caps them).
        self.streams: Counter[str] = Counter()
        #: Streams waiting for their first (auth) message, per client address.
        self.unauthenticated: Counter[str] = Counter()
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, seen_version: int) -> None:
        """Return once `version` differs from `seen_version`."""
        while self.version == seen_version:
            await self._changed.wait()


async def read_events(
    engine: AsyncEngine,
    after: int,
    *,
    workflow_id: str | None = None,
    types: Sequence[str] = (),
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Events with `seq > after`, oldest first, optionally filtered."""
    query = select(Event.__table__).where(Event.seq > after)
    if workflow_id is not None:
        query = query.where(Event.workflow_id == workflow_id)
    if types:
        query = query.where(Event.type.in_(list(types)))
    async with engine.connect() as connection:
        rows = await connection.execute(query.order_by(Event.seq).limit(limit))
        return [dict(row) for row in rows.mappings()]
