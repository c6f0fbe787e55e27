"""The embedded store: the graph in memory (`MemoryTaskStore`), every transition written
to the SQLite database through the journal (`store/journal.py`), and what a restart
must know of an attempt before its commit in the attempt log (`store/attempt_log.py`).

- Transitions are group-committed: a task's provider call starts once the ends of its
  dependencies are committed (and, for a compensation, its own row) — `before_call` —
  without waiting for the commit of its `Running` transition: the attempt and the
  handle its provider gives are appended to the attempt log first.
- `open` loads every unfinished workflow; tasks left `Running` (in the database, or in
  the attempt log only) are the interrupted attempts the scheduler recovers.
- One process per database (the service locks the data directory).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.rules import TaskStatus
from orchestrator.specs import TaskDefaults
from orchestrator.store.attempt_log import AttemptLog, LoggedAttempt
from orchestrator.store.journal import Journal, ResourceRecord
from orchestrator.store.memory import MemoryTaskStore, TaskRun, WorkflowRun
from orchestrator.store.taskstore import (
    JSON,
    Claim,
    EndReport,
    Inventory,
    Limits,
    NewWorkflow,
    ResourceWrite,
)
from orchestrator.store.workflows import SqlInventory, load_unfinished, write_workflow

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

log = structlog.get_logger(__name__)


class SqliteTaskStore(MemoryTaskStore):
    def __init__(
        self,
        engine: AsyncEngine,
        writer_engine: Engine,
        limits: Limits,
        defaults: TaskDefaults,
        *,
        data_dir: Path,
        outbox: Outbox | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(limits, defaults, on_commit=on_commit)
        self.engine = engine
        self._outbox = outbox
        self.journal = Journal(writer_engine, on_commit=on_commit, outbox=outbox)
        self._attempts = AttemptLog(data_dir / "attempts.log", self.journal)
        #: What the attempt log told at start, until every workflow is loaded.
        self._logged: dict[str, LoggedAttempt] = {}
        #: Why the attempt log could not be written: nothing more may start.
        self._log_failure: OSError | None = None

    @property
    def healthy(self) -> bool:
        return not self.journal.failed and self._log_failure is None

    @property
    def commits(self) -> int:
        return self.journal.commits

    def _new_inventory(self, provider: str) -> Inventory:
        return SqlInventory(self.engine, provider)

    async def open(self) -> list[Claim]:
        self.journal.start()
        self._attempts.open()
        self._logged = self._attempts.read()
        interrupted: list[Claim] = []
        for stored in await load_unfinished(self.engine):
            tasks = [self._with_logged_attempt(t) for t in stored.tasks]
            wf = self._load(stored.workflow, tasks, stored.dependencies)
            interrupted += [t.claim() for t in wf.tasks.values() if t.status == TaskStatus.RUNNING]
        self._logged = {}
        return interrupted

    async def recovered(self) -> None:
        await self.journal.flush()  # what the log told is in the store now
        self._attempts.reset()
        await super().recovered()

    async def close(self) -> None:
        await super().close()
        try:
            await self.journal.close()
            if not self.journal.failed:
                self._attempts.reset()  # every attempt it told of is committed
        finally:
            self._attempts.close()

    async def submit(self, workflow: NewWorkflow) -> None:
        await self.journal.write(
            partial(
                write_workflow,
                workflow=workflow.workflow,
                tasks=workflow.tasks,
                dependencies=workflow.edges,
                outbox=self._outbox,
            )
        )
        await super().submit(workflow)

    async def before_call(self, claim: Claim) -> None:
        if self.journal.commits < claim.barrier or self.journal.failed:
            await self.journal.flush()

    async def cancel(self, workflow_id: str) -> EndReport | None:
        report = await super().cancel(workflow_id)
        await self.journal.flush()
        return report

    async def wait_ended(self, workflow_id: str) -> None:
        await super().wait_ended(workflow_id)
        await self.journal.flush()

    def _with_logged_attempt(self, t: Mapping[str, Any]) -> Mapping[str, Any]:
        """A task row as the attempt log completes it: an attempt that began after the
        last commit of the task's state is `Running`, with the handle logged for it."""
        logged = self._logged.get(t["id"])
        if logged is None or t["status"] not in ("Pending", "Running"):
            return t
        if logged.attempt > t["attempts"]:
            return {**t, "status": "Running", "attempts": logged.attempt, "handle": logged.handle}
        if logged.attempt == t["attempts"] and t["status"] == "Running" and not t["handle"]:
            return {**t, "handle": logged.handle}
        return t

    # -- the hooks: every transition through the journal ------------------------------

    def _persist_task(self, task: TaskRun) -> None:
        self.journal.task(task.id, task.state())

    def _persist_workflow(self, wf: WorkflowRun) -> None:
        self.journal.workflow(wf.id, wf.state())

    def _event(self, type_: str, data: JSON, workflow_id: str, task_id: str | None) -> None:
        self.journal.event(type_, data, workflow_id, task_id)

    def _released_dependents(self, task: TaskRun, *, soft_only: bool) -> None:
        self.journal.release_dependents(task.id, soft_only=soft_only)

    def _inserted(self, rows: list[JSON], edges: list[tuple[str, str, str]]) -> None:
        self.journal.insert_tasks(rows, edges)

    def _resource(self, task: TaskRun, write: ResourceWrite) -> None:
        self.journal.resource(ResourceRecord(task.provider, task.workflow.id, task.id, write))

    def _starting(self, task: TaskRun) -> bool:
        if self._log_failure is not None:
            return False
        try:
            self._attempts.started(task.id, task.attempts + 1)
        except OSError as exc:
            self._log_failure = exc
            log.error("cannot write the attempt log; no task starts any more", error=str(exc))
            return False
        return True

    def _handle_recorded(self, task: TaskRun, handle: JSON) -> None:
        # In the attempt log before the provider waits on the work, so a restarted
        # orchestrator can find and stop what this attempt started; committed soon.
        try:
            self._attempts.handle(task.id, task.attempts, handle)
        except OSError as exc:  # the provider stops what it started, and it fails
            self._log_failure = exc
            log.error("cannot write the attempt log; no task starts any more", error=str(exc))
            raise
        self._persist_task(task)

    def _barrier(self) -> int:
        return self.journal.next_batch

    def _ended(self, wf: WorkflowRun) -> None:
        """Forgotten here: the database has it."""
