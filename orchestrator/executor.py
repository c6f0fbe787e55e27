"""The async executor: runs persisted task graphs under limits, durably.

Rules (see docs/concepts.md):

- A task is ready when all its dependencies are `Completed`; completing a task decrements
  its dependents' counters, so nothing rescans the graph.
- A global limit, each workflow's `parallel_limit` and each provider instance's limit
  are checked before every start and never exceeded.
- Every transition goes through the journal; a task's provider call starts only once its
  `Running` transition (and so the completion of its dependencies) is committed.
- A failed attempt is retried with exponential backoff and jitter while attempts remain;
  a task that fails for good cancels its dependents, naming it.
- On start, workflows left unfinished by a previous process are resumed: tasks it left
  `Running` have whatever it started stopped (`Provider.reap`), count as a failed attempt
  and are retried by their policy.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.ids import new_id
from orchestrator.settings import ExecutorSettings
from orchestrator.store.journal import Journal, ResourceWrite, utcnow
from orchestrator.store.workflows import (
    StoredWorkflow,
    get_resource,
    list_resources,
    load_unfinished,
)
from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    PermanentProviderError,
    Provider,
)

log = structlog.get_logger(__name__)

TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})


@dataclass(eq=False, slots=True)
class TaskRun:
    id: str
    name: str
    workflow: WorkflowRun
    provider: str
    action: str
    params: JSON
    status: str
    attempts: int
    max_attempts: int
    retry_initial_delay: float
    retry_max_delay: float
    timeout: float | None
    pending: int
    output: str | None = None
    error: str | None = None
    result: JSON | None = None
    progress: float = 0.0
    not_before: datetime | None = None
    handle: JSON | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_owner: str | None = None
    dependents: list[TaskRun] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None
    cancel_reason: str | None = None

    def state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "attempts": self.attempts,
            "progress": self.progress,
            "output": self.output,
            "error": self.error,
            "result": self.result,
            "not_before": self.not_before,
            "lease_owner": self.lease_owner,
            "lease_expires_at": None,
            "handle": self.handle,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
        }


@dataclass(eq=False, slots=True)
class WorkflowRun:
    id: str
    kind: str
    status: str
    parallel_limit: int
    check_mode: bool
    started_at: datetime | None
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    ready: deque[TaskRun] = field(default_factory=deque)
    running: int = 0
    unfinished: int = 0
    queued: bool = False
    cancel_requested: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def state(self, error: str | None = None) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": error,
            "started_at": self.started_at,
            "completed_at": utcnow() if self.status in TERMINAL else None,
        }


class StoreInventory:
    """The `Inventory` a provider instance sees: its own rows of the resources table."""

    def __init__(self, engine: AsyncEngine, provider: str) -> None:
        self._engine = engine
        self._provider = provider

    async def get(self, kind: str, name: str) -> JSON | None:
        row = await get_resource(self._engine, self._provider, kind, name)
        return None if row is None else {**row["data"], "status": row["status"]}

    async def list(self, kind: str) -> list[JSON]:
        rows = await list_resources(self._engine, self._provider, kind)
        return [{**row["data"], "name": row["name"], "status": row["status"]} for row in rows]


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """Delay before attempt `attempt + 1`: exponential from `initial`, capped, jittered."""
    base = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return float(max(0.0, base * (1 + random.uniform(-jitter, jitter))))


class Executor:
    """Runs every unfinished workflow of the store to a terminal state."""

    def __init__(
        self,
        engine: AsyncEngine,
        providers: Mapping[str, Provider],
        settings: ExecutorSettings,
        *,
        workspace: Path,
        provider_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.engine = engine
        self.providers = dict(providers)
        self.settings = settings
        self.workspace = workspace
        self.worker_id = f"worker-{new_id()[:8]}"
        self.journal = Journal(engine)
        self._provider_limits = dict(provider_limits or {})
        self._inventories = {name: StoreInventory(engine, name) for name in self.providers}
        self._workflows: dict[str, WorkflowRun] = {}
        self._ready_workflows: deque[WorkflowRun] = deque()
        self._provider_running: dict[str, int] = defaultdict(int)
        self._provider_blocked: dict[str, deque[TaskRun]] = defaultdict(deque)
        self._timers: set[asyncio.TimerHandle] = set()
        self.running = 0
        self._stopping = False
        self.started = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self.journal.start()
        for stored in await load_unfinished(self.engine):
            await self._resume(stored)
        self.started = True
        self._pump()

    async def stop(self) -> None:
        """Stop starting tasks; interrupt running ones so a restart retries them."""
        self._stopping = True
        for timer in self._timers:
            timer.cancel()
        runners = [
            t.runner
            for wf in self._workflows.values()
            for t in wf.tasks.values()
            if t.runner is not None and not t.runner.done()
        ]
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        await self.journal.close()

    # -- public operations -----------------------------------------------------------

    async def submit(self, stored: StoredWorkflow) -> None:
        """Take a workflow just inserted by the store and start its ready tasks."""
        await self._resume(stored)
        self._pump()

    async def cancel(self, workflow_id: str) -> bool:
        """Cancel a workflow: pending tasks never start, running ones are stopped."""
        wf = self._workflows.get(workflow_id)
        if wf is None:
            return False
        wf.cancel_requested = True
        for task in wf.tasks.values():
            if task.status == "Pending":
                self._finish(task, "Cancelled", error="cancelled: the workflow was cancelled")
            elif task.status == "Running" and task.runner is not None:
                task.cancel_reason = "cancelled: the workflow was cancelled"
                provider = self.providers.get(task.provider)
                if provider is not None:
                    await provider.cancel(task.id)
                task.runner.cancel()
        await self.journal.flush()
        return True

    async def wait(self, workflow_id: str) -> bool:
        """Wait until the workflow ends; False at once if it is not active here."""
        wf = self._workflows.get(workflow_id)
        if wf is None:
            return False
        await wf.done.wait()
        await self.journal.flush()
        return True

    def is_active(self, workflow_id: str) -> bool:
        return workflow_id in self._workflows

    @property
    def queued(self) -> int:
        return sum(len(wf.ready) for wf in self._workflows.values()) + sum(
            len(q) for q in self._provider_blocked.values()
        )

    # -- loading ---------------------------------------------------------------------

    async def _resume(self, stored: StoredWorkflow) -> None:
        row = stored.workflow
        wf = WorkflowRun(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            parallel_limit=max(1, int(row["parallel_limit"])),
            check_mode=bool(row["check_mode"]),
            started_at=row["started_at"],
        )
        self._workflows[wf.id] = wf
        for t in stored.tasks:
            wf.tasks[t["id"]] = TaskRun(
                id=t["id"],
                name=t["name"],
                workflow=wf,
                provider=t["provider"],
                action=t["action"],
                params=t["params"],
                status=t["status"],
                attempts=t["attempts"],
                max_attempts=t["max_attempts"],
                retry_initial_delay=t["retry_initial_delay"],
                retry_max_delay=t["retry_max_delay"],
                timeout=t["timeout"],
                pending=0,
                output=t["output"],
                error=t["error"],
                result=t["result"],
                progress=t["progress"],
                not_before=t["not_before"],
                handle=t["handle"],
                started_at=t["started_at"],
                completed_at=t["completed_at"],
            )
        for task_id, deps in stored.dependencies.items():
            task = wf.tasks[task_id]
            for dep_id in deps:
                dep = wf.tasks[dep_id]
                dep.dependents.append(task)
                if dep.status != "Completed":
                    task.pending += 1
        wf.unfinished = sum(1 for t in wf.tasks.values() if t.status not in TERMINAL)
        for task in wf.tasks.values():
            if task.status == "Running":
                await self._recover_interrupted(task)
        for task in list(wf.tasks.values()):
            if task.status == "Pending" and task.pending == 0:
                self._schedule(task)
        # A failure recorded before a crash may not have cascaded yet.
        for task in list(wf.tasks.values()):
            if task.status in ("Failed", "Cancelled"):
                self._cascade(task)
        if wf.unfinished == 0:
            self._finish_workflow(wf)

    async def _recover_interrupted(self, task: TaskRun) -> None:
        provider = self.providers.get(task.provider)
        if provider is not None and task.handle:
            try:
                await provider.reap(task.handle)
            except Exception:
                log.exception("reap failed", task_id=task.id)
        error = f"interrupted: the orchestrator stopped while attempt {task.attempts} was running"
        self.journal.event(
            "TaskInterrupted",
            {"task_id": task.id, "attempt": task.attempts, "error": error},
            task.workflow.id,
            task.id,
        )
        task.handle = None
        self._after_failure(task, error, retryable=True)

    # -- scheduling ------------------------------------------------------------------

    def _schedule(self, task: TaskRun) -> None:
        """Queue a pending task whose dependencies are complete (after any backoff)."""
        if task.not_before is not None:
            delay = (task.not_before - utcnow()).total_seconds()
            if delay > 0:
                loop = asyncio.get_running_loop()
                handle: asyncio.TimerHandle

                def fire() -> None:
                    self._timers.discard(handle)
                    if task.status == "Pending":
                        self._make_ready(task)
                        self._pump()

                handle = loop.call_later(delay, fire)
                self._timers.add(handle)
                return
        self._make_ready(task)

    def _make_ready(self, task: TaskRun) -> None:
        wf = task.workflow
        wf.ready.append(task)
        self._enqueue_workflow(wf)

    def _enqueue_workflow(self, wf: WorkflowRun) -> None:
        if not wf.queued and wf.ready and wf.running < wf.parallel_limit:
            wf.queued = True
            self._ready_workflows.append(wf)

    def _provider_limit(self, provider: str) -> int:
        return self._provider_limits.get(provider, self.settings.provider_limit)

    def _pump(self) -> None:
        """Start ready tasks, round-robin over workflows, while every limit allows."""
        if self._stopping:
            return
        while self._ready_workflows and self.running < self.settings.global_limit:
            wf = self._ready_workflows.popleft()
            wf.queued = False
            if not wf.ready or wf.running >= wf.parallel_limit:
                continue
            task = wf.ready.popleft()
            if task.status != "Pending":
                self._enqueue_workflow(wf)
                continue
            if self._provider_running[task.provider] >= self._provider_limit(task.provider):
                self._provider_blocked[task.provider].append(task)
                self._enqueue_workflow(wf)
                continue
            self._start(task)
            self._enqueue_workflow(wf)

    def _start(self, task: TaskRun) -> None:
        wf = task.workflow
        now = utcnow()
        self.running += 1
        wf.running += 1
        self._provider_running[task.provider] += 1
        task.status = "Running"
        task.attempts += 1
        task.started_at = now
        task.not_before = None
        task.lease_owner = self.worker_id
        self.journal.task(task.id, task.state())
        self.journal.event(
            "TaskStatusChanged",
            {"task_id": task.id, "name": task.name, "status": "Running", "attempt": task.attempts},
            wf.id,
            task.id,
        )
        if wf.status == "Pending":
            wf.status = "Running"
            wf.started_at = now
            self.journal.workflow(wf.id, wf.state())
            self.journal.event(
                "WorkflowStatusChanged", {"workflow_id": wf.id, "status": "Running"}, wf.id
            )
        task.runner = asyncio.create_task(self._run(task), name=f"task-{task.id}")

    def _release_slot(self, task: TaskRun) -> None:
        wf = task.workflow
        self.running -= 1
        wf.running -= 1
        self._provider_running[task.provider] -= 1
        blocked = self._provider_blocked.get(task.provider)
        if blocked:
            waiting = blocked.popleft()
            waiting.workflow.ready.appendleft(waiting)
            self._enqueue_workflow(waiting.workflow)
        self._enqueue_workflow(wf)

    # -- running ---------------------------------------------------------------------

    async def _run(self, task: TaskRun) -> None:
        try:
            await self.journal.flush()
            result = await self._call_provider(task)
        except asyncio.CancelledError:
            self._release_slot(task)
            if task.cancel_reason is not None:
                self._finish(task, "Cancelled", error=task.cancel_reason)
                self._pump()
            # Otherwise the executor is stopping: the task stays Running in the store
            # and a restarted orchestrator retries it.
            return
        except TimeoutError:
            self._release_slot(task)
            self._after_failure(task, f"timed out after {task.timeout:g}s", retryable=True)
        except PermanentProviderError as exc:
            self._release_slot(task)
            self._after_failure(task, str(exc) or type(exc).__name__, retryable=False)
        except Exception as exc:
            self._release_slot(task)
            self._after_failure(task, str(exc) or type(exc).__name__, retryable=True)
        else:
            self._release_slot(task)
            self._complete(task, result)
        self._pump()

    async def _call_provider(self, task: TaskRun) -> ActionResult:
        provider = self.providers.get(task.provider)
        if provider is None:
            raise PermanentProviderError(
                f"provider instance '{task.provider}' is not configured "
                f"(configured: {', '.join(sorted(self.providers)) or 'none'})"
            )
        call = ActionCall(
            task_id=task.id,
            workflow_id=task.workflow.id,
            instance=task.provider,
            action=task.action,
            params=task.params,
            attempt=task.attempts,
            timeout=task.timeout,
            workspace=self.workspace,
            inventory=self._inventories.get(task.provider)
            or StoreInventory(self.engine, task.provider),
            on_handle=self._handle_recorder(task),
        )
        method = provider.check if task.workflow.check_mode else provider.apply
        if task.timeout:
            async with asyncio.timeout(task.timeout):
                return await method(call)
        return await method(call)

    def _handle_recorder(self, task: TaskRun) -> Any:
        async def record(handle: JSON) -> None:
            task.handle = handle
            self.journal.task(task.id, task.state())

        return record

    def _complete(self, task: TaskRun, result: ActionResult) -> None:
        task.output = result.output
        task.result = {**result.result, "reversible": result.reversible}
        task.progress = 100.0
        task.handle = None
        if not task.workflow.check_mode:
            for change in result.resources:
                self.journal.resource(
                    ResourceWrite(task.provider, task.workflow.id, task.id, change)
                )
        self._finish(task, "Completed")

    def _after_failure(self, task: TaskRun, error: str, *, retryable: bool) -> None:
        if task.workflow.cancel_requested:
            self._finish(task, "Cancelled", error="cancelled: the workflow was cancelled")
            return
        if retryable and task.attempts < task.max_attempts:
            delay = backoff_delay(
                task.attempts,
                task.retry_initial_delay,
                task.retry_max_delay,
                self.settings.retry.jitter,
            )
            task.status = "Pending"
            task.error = error
            task.handle = None
            task.not_before = utcnow() + timedelta(seconds=delay)
            self.journal.task(task.id, task.state())
            self.journal.event(
                "TaskStatusChanged",
                {
                    "retrying": True,
                    "task_id": task.id,
                    "name": task.name,
                    "status": "Pending",
                    "attempt": task.attempts,
                    "max_attempts": task.max_attempts,
                    "delay": round(delay, 3),
                    "error": error,
                },
                task.workflow.id,
                task.id,
            )
            self._schedule(task)
            return
        self._finish(task, "Failed", error=error)

    def _finish(
        self, task: TaskRun, status: str, *, error: str | None = None, cascade: bool = True
    ) -> None:
        """Record a terminal state and propagate it to dependents."""
        wf = task.workflow
        task.status = status
        task.completed_at = utcnow()
        task.runner = None
        if error is not None:
            task.error = error
        self.journal.task(task.id, task.state())
        data: JSON = {"task_id": task.id, "name": task.name, "status": status}
        if error is not None:
            data["error"] = error
        self.journal.event("TaskStatusChanged", data, wf.id, task.id)
        wf.unfinished -= 1
        if status == "Completed":
            self.journal.release_dependents(task.id)
            for dependent in task.dependents:
                dependent.pending -= 1
                if dependent.pending == 0 and dependent.status == "Pending":
                    self._schedule(dependent)
        elif cascade:
            self._cascade(task)
        if wf.unfinished == 0:
            self._finish_workflow(wf)

    def _cascade(self, failed: TaskRun) -> None:
        """Cancel every pending task below `failed`, naming it as the cause."""
        verb = "failed" if failed.status == "Failed" else "was cancelled"
        error = f"cancelled: dependency '{failed.name}' {verb}"
        stack = list(failed.dependents)
        while stack:
            task = stack.pop()
            if task.status == "Pending":
                self._finish(task, "Cancelled", error=error, cascade=False)
                stack.extend(task.dependents)

    def _finish_workflow(self, wf: WorkflowRun) -> None:
        statuses = {t.status for t in wf.tasks.values()}
        failed = [t for t in wf.tasks.values() if t.status == "Failed"]
        error = None
        if wf.cancel_requested:
            wf.status = "Cancelled"
            error = "cancelled by request"
        elif failed or "Cancelled" in statuses:
            wf.status = "Failed"
            error = "; ".join(f"{t.name}: {t.error}" for t in failed[:5]) or "tasks were cancelled"
        else:
            wf.status = "Completed"
        self.journal.workflow(wf.id, wf.state(error))
        data: JSON = {"workflow_id": wf.id, "status": wf.status}
        if error:
            data["error"] = error
        self.journal.event("WorkflowStatusChanged", data, wf.id)
        self._workflows.pop(wf.id, None)
        wf.done.set()
