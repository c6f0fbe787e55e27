"""What the API and the CLI read, through the service: workflows, tasks, the event log,
checkpoints, the inventory, webhook deliveries and statistics.

`Orchestrator.records` is one of these over the process's database. Controllers read
through it and never name the store's queries or hold its engine: the store's surface
can change without them. Writes go through `Orchestrator` itself (they commit events,
which wake the stream and webhooks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from orchestrator.rules import DoneTask
from orchestrator.store import (
    checkpoints,
    events,
    inventory,
    outbox,
    retention,
    rollbacks,
    statistics,
)
from orchestrator.store import workflows as stored
from orchestrator.store.engine import AsyncEngine
from orchestrator.store.events import LoggedEvent
from orchestrator.store.outbox import Delivery, DeliveryStatus

Row = dict[str, Any]


class Records:
    """Reads of one database (see the module's docstring)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # Workflows and tasks.

    async def workflow(self, workflow_id: str) -> Row | None:
        """A workflow with its task counts."""
        return await stored.get_workflow(self._engine, workflow_id)

    async def workflows(
        self, *, status: str | None, kind: str | None, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        """A page of workflows, newest first, and how many match in all."""
        return await stored.list_workflows(
            self._engine, status=status, kind=kind, limit=limit, offset=offset
        )

    async def task(self, task_id: str) -> Row | None:
        return await stored.get_task(self._engine, task_id)

    async def tasks(
        self, *, status: str | None, workflow_id: str | None, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        return await stored.list_tasks(
            self._engine, status=status, workflow_id=workflow_id, limit=limit, offset=offset
        )

    async def tasks_of(self, workflow_ids: Sequence[str]) -> list[Row]:
        """The tasks of these workflows."""
        return await stored.tasks_of(self._engine, workflow_ids)

    async def batch_tasks(self, batch_ids: Sequence[str]) -> list[Row]:
        """The batches' tasks, with the compensations other workflows ran for them
        (filed under the batch of the task they undo)."""
        tasks = await stored.tasks_of(self._engine, batch_ids)
        known = {t["id"] for t in tasks}
        originals = [t["id"] for t in tasks if t["compensates"] is None]
        extra = [
            t
            for t in await stored.compensations_of(self._engine, originals)
            if t["id"] not in known
        ]
        workflow_of = {t["id"]: t["workflow_id"] for t in tasks}
        for task in extra:
            task["workflow_id"] = workflow_of[task["compensates"]]
        return tasks + extra

    async def task_timings(self, workflow_id: str) -> list[Row]:
        """A workflow's tasks' names, statuses and start and end times, in order."""
        return await statistics.task_timings(self._engine, workflow_id)

    # The event log.

    async def events(
        self,
        after: int = 0,
        *,
        workflow_id: str | None = None,
        types: Sequence[str] = (),
        limit: int | None = 500,
    ) -> list[LoggedEvent]:
        """Events with `seq > after`, oldest first (`limit` None: all of them)."""
        return await events.read_events(
            self._engine, after, workflow_id=workflow_id, types=types, limit=limit
        )

    async def last_seq(self) -> int:
        """The log's last seq: also proves the database answers."""
        return await events.last_seq(self._engine)

    # Rollback: checkpoints and what can be undone.

    async def checkpoint(self, checkpoint_id: str) -> Row | None:
        return await checkpoints.get_checkpoint(self._engine, checkpoint_id)

    async def checkpoints(self, limit: int, offset: int) -> tuple[list[Row], int]:
        return await checkpoints.list_checkpoints(self._engine, limit, offset)

    async def undoable(
        self, *, since: datetime | None = None, operation_ids: Sequence[str] = ()
    ) -> list[DoneTask]:
        """What a rollback would compensate: work completed after `since`, or in the
        named operations, not undone yet."""
        return await rollbacks.undoable_tasks(
            self._engine, since=since, operation_ids=operation_ids
        )

    async def undoable_for(
        self, items: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], list[DoneTask]]:
        """The completed work, not undone, that created or changed each (instance, kind,
        name): what deleting it undoes."""
        return await rollbacks.undoable_for(self._engine, items)

    # The inventory.

    async def resources(self, *, kind: str | None, provider: str | None) -> list[Row]:
        """Every inventory row of this kind and instance, each with its `owner`."""
        return await inventory.inventory_rows(self._engine, kind=kind, provider=provider)

    async def resource(self, resource_id: str) -> Row | None:
        return await inventory.inventory_row(self._engine, resource_id)

    # Webhooks.

    async def deliveries(
        self, *, status: DeliveryStatus | None, event: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        return await outbox.list_deliveries(
            self._engine, status=status, event=event, limit=limit, offset=offset
        )

    # Statistics.

    async def workflow_counts(self) -> Counter[str]:
        """Workflows per status."""
        return await statistics.workflow_counts(self._engine)

    async def durations(self, *, kind: str | None = None) -> list[Row]:
        """Finished workflows (of `kind`) with their status and duration in seconds."""
        return await statistics.durations(self._engine, kind=kind)

    async def rolled_back_workflows(self) -> int:
        return await statistics.rolled_back_workflows(self._engine)

    async def checkpoint_count(self) -> int:
        return await statistics.checkpoint_count(self._engine)

    async def database_bytes(self) -> int:
        """The database's size on disk."""
        return await statistics.database_bytes(self._engine)

    async def row_counts(self) -> dict[str, int]:
        """Rows kept, per kind."""
        return await retention.sizes(self._engine)
