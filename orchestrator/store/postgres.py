"""The shared PostgreSQL store: workers (`provisioning worker`, or `serve` with its
embedded worker) claim tasks from one database under limits that hold across all of
them (`store/claims.py`), and record each attempt's end in one transaction
(`store/endings.py`).

- Claims carry leases: the scheduler renews them (`heartbeat`); a task whose lease
  expired (its worker was killed, or lost the database) is recovered by any worker
  (`expired`). A worker's identity is its host and data directory, so a restarted
  worker recovers its own unfinished attempts at once (`open`).
- Workers wake on `LISTEN/NOTIFY` (every claim, attempt end, submission and cancel
  notifies), and also look every `poll_interval` in case a notification was lost with
  a connection, and when a retry delay ends. A cancel made anywhere reaches the
  workers running that workflow's tasks (`on_cancel`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.rules import WORKFLOW_TERMINAL
from orchestrator.specs import TaskDefaults
from orchestrator.store import claims, endings
from orchestrator.store.claims import CHANNEL_CANCEL, CHANNEL_EVENTS, CHANNEL_TASKS
from orchestrator.store.taskstore import (
    JSON,
    AttemptEnd,
    Claim,
    EndReport,
    Inventory,
    Limits,
    NewWorkflow,
)
from orchestrator.store.workflows import SqlInventory, insert_workflow

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

log = structlog.get_logger(__name__)

#: Tasks claimed in one statement at most.
CLAIM_BATCH = 64


def _claim(row: dict[str, Any]) -> Claim:
    return Claim(
        task_id=row["id"],
        name=row["name"],
        workflow_id=row["workflow_id"],
        provider=row["provider"],
        action=row["action"],
        params=row["params"],
        attempt=row["attempts"],
        timeout=row["timeout"],
        check_mode=bool(row["check_mode"]),
        compensates=row["compensates"],
        compensation=row["compensation"],
        owner=row["lease_owner"] or "",
        handle=row["handle"],
    )


class PostgresTaskStore:
    leases = True

    def __init__(
        self,
        engine: AsyncEngine,
        limits: Limits,
        defaults: TaskDefaults,
        *,
        worker_id: str,
        lease: float,
        poll_interval: float,
        outbox: Outbox | None = None,
        on_commit: Callable[[], None] | None = None,
        on_cancel: Callable[[set[str]], None] | None = None,
        counts: bool = False,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.defaults = defaults
        self.worker_id = worker_id
        self.lease = lease
        self.poll_interval = poll_interval
        self._outbox = outbox
        self._on_commit = on_commit
        self.on_cancel = on_cancel
        #: Keep `queued` and `running_anywhere` current from the database (a process
        #: that runs no tasks, whose scheduler does not heartbeat).
        self._counts = counts
        self._wake = asyncio.Event()
        #: Set (and replaced) whenever an attempt ended anywhere: what `wait_ended` waits on.
        self._ended = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._cancels: set[asyncio.Task[None]] = set()
        self._queued = 0
        self._running_anywhere = 0
        self._healthy = True
        self._commits = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def commits(self) -> int:
        return self._commits

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def running_anywhere(self) -> int:
        return self._running_anywhere

    # -- lifecycle ---------------------------------------------------------------------

    def inventory(self, provider: str) -> Inventory:
        return SqlInventory(self.engine, provider)

    async def open(self) -> list[Claim]:
        """Listen for notifications; return this worker's own unfinished attempts (its
        previous run's, after a crash)."""
        await self._listen()
        self._watch = asyncio.create_task(self._watch_loop(), name="watch")
        rows = await claims.expired_leases(self.engine, owner=self.worker_id)
        return [_claim(row) for row in rows]

    async def recovered(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await asyncio.gather(
            *(t for t in (self._watch, *self._cancels) if t is not None),
            return_exceptions=True,
        )
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    # -- the TaskStore surface -------------------------------------------------------

    async def submit(self, workflow: NewWorkflow) -> None:
        await insert_workflow(
            self.engine, workflow.workflow, workflow.tasks, workflow.edges, self._outbox
        )
        self._wake.set()  # whichever worker is free claims its ready tasks
        await claims.notify(self.engine)

    async def claim(self, limit: int) -> list[Claim]:
        """Up to `limit` ready tasks, in statements of at most `CLAIM_BATCH`; fewer only
        when no more is ready (or the database failed: then it says so in the log)."""
        claimed: list[Claim] = []
        while len(claimed) < limit:
            batch = min(limit - len(claimed), CLAIM_BATCH)
            try:
                rows = await claims.claim(
                    self.engine,
                    self.worker_id,
                    batch=batch,
                    lease=self.lease,
                    limits=self.limits,
                    outbox=self._outbox,
                )
            except Exception:
                log.exception("claiming failed; retrying")
                self._healthy = False
                break
            self._healthy = True
            if rows:
                self._committed()
            claimed += [_claim(row) for row in rows]
            if len(rows) < batch:
                break
        return claimed

    async def before_call(self, claim: Claim) -> None:
        return None

    async def record_handle(self, claim: Claim, handle: JSON) -> None:
        # Committed before the provider lets the work start, so whoever recovers the
        # task can stop what this attempt started.
        await claims.record_handle(self.engine, claim.task_id, claim.owner, handle)

    async def end(self, end: AttemptEnd) -> EndReport | None:
        try:
            report = await endings.end_attempt(self.engine, end, self.defaults, self._outbox)
        except Exception:
            # The lease will expire and another worker (or this one) retries the task.
            log.exception("could not record an attempt's end", task_id=end.claim.task_id)
            self._healthy = False
            return None
        if report is None:
            log.warning("lease lost before the attempt ended", task_id=end.claim.task_id)
            return None
        self._committed()
        return report

    async def cancel(self, workflow_id: str) -> EndReport | None:
        report = await endings.request_cancel(self.engine, workflow_id, self.defaults, self._outbox)
        if report is not None:
            self._committed()
        return report

    async def heartbeat(self, task_ids: Sequence[str]) -> set[str]:
        held = await claims.heartbeat(self.engine, self.worker_id, task_ids, self.lease)
        self._queued = await claims.ready_count(self.engine)
        return held

    async def cancel_requested(self, workflow_ids: Sequence[str]) -> set[str]:
        return await claims.cancel_requested(self.engine, workflow_ids)

    async def expired(self) -> list[Claim]:
        return [_claim(row) for row in await claims.expired_leases(self.engine)]

    async def wait_for_work(self, patience: float) -> None:
        due = None
        with contextlib.suppress(Exception):
            due = await claims.next_due(self.engine)
        if due is not None:
            patience = min(patience, max(0.0, due.timestamp() - time.time()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), patience)
        self._wake.clear()

    async def wait_ended(self, workflow_id: str) -> None:
        """Return once the workflow has ended (on whichever worker ran it)."""
        while True:
            ended = self._ended
            status = await claims.workflow_status(self.engine, workflow_id)
            if status is None or status in WORKFLOW_TERMINAL:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), self.poll_interval)

    # -- notifications ---------------------------------------------------------------

    async def _listen(self) -> None:
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            listener = await asyncpg.connect(url)
            await listener.add_listener(CHANNEL_TASKS, self._on_tasks)
            await listener.add_listener(CHANNEL_EVENTS, self._on_events)
            await listener.add_listener(CHANNEL_CANCEL, self._on_cancel)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("LISTEN failed; polling until it works", error=str(exc))
            return
        self._listener = listener

    def _on_tasks(self, *_: object) -> None:
        self._wake.set()
        ended, self._ended = self._ended, asyncio.Event()
        ended.set()
        self._committed()

    def _on_events(self, *_: object) -> None:
        self._committed()

    def _on_cancel(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        if self.on_cancel is not None:
            self.on_cancel({str(payload)})

    def _committed(self) -> None:
        self._commits += 1
        if self._on_commit is not None:
            self._on_commit()

    async def _watch_loop(self) -> None:
        """Keep the listener connected; wake readers in case a notification was lost."""
        while True:
            await asyncio.sleep(self.poll_interval)
            if self._listener is None or self._listener.is_closed():
                self._listener = None
                await self._listen()
            self._wake.set()
            if self._on_commit is not None:
                self._on_commit()
            if self._counts:
                with contextlib.suppress(Exception):
                    self._running_anywhere = await claims.running_count(self.engine)
                    self._queued = await claims.ready_count(self.engine)
