"""A wake-up signal for the event log's live readers.

Every event is a row of the `events` table, written in the transaction of the change it
records. Consumers (the WebSocket stream, webhooks) do not get events pushed in memory:
they read the table from the last `seq` they saw (`orchestrator/store/events.py`), and
`EventBus` only wakes them when a commit may have added rows. So a consumer that falls
behind costs no memory, a reconnecting one resumes from its `seq`, and nothing a
consumer does can slow the executor.
"""

from __future__ import annotations

import asyncio
from collections import Counter


class EventBus:
    """A version counter bumped after each commit that wrote events."""

    def __init__(self) -> None:
        self.version = 0
        #: Open event streams per user (the API caps them).
        self.streams: Counter[str] = Counter()
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self.version += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for_change(self, seen_version: int) -> None:
        """Return once `version` differs from `seen_version`."""
        while self.version == seen_version:
            await self._changed.wait()
