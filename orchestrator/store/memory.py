"""The task graph in memory: a `TaskStore` that keeps everything in this process.

It is the store of the scheduler's and the rules' fast tests, and the core of the
embedded store (`SqliteTaskStore` persists each of its transitions through hooks):

- A task is ready when all its dependencies are `Completed` (soft ones: ended in any
  state); an end decrements its dependents' counters, so nothing rescans the graph.
- `claim` takes ready tasks round-robin over workflows while the global, per-workflow
  and per-provider limits allow (`Limits`, each workflow's `parallel_limit`).
- Every end is decided by `orchestrator.rules`; failures cascade through hard edges,
  release soft dependents, may stop the workflow, and a workflow with nothing left
  ends or starts its rollback (`orchestrator.rules` plans the compensations).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from orchestrator.clock import utcnow
from orchestrator.ids import new_id
from orchestrator.rules import (
    CANCELLED_BY_REQUEST,
    TERMINAL,
    WORKFLOW_TERMINAL,
    DoneTask,
    EndedTask,
    Outcome,
    RetryPolicy,
    TaskStatus,
    WorkflowStatus,
    after_attempt,
    compensation_rows,
    dependency_reason,
    stop_reason,
    workflow_end,
)
from orchestrator.specs import TaskDefaults
from orchestrator.store.taskstore import (
    JSON,
    AttemptEnd,
    Claim,
    EndReport,
    Inventory,
    Limits,
    NewWorkflow,
    ResourceWrite,
    Settlement,
)

log = structlog.get_logger(__name__)


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
    on_failure: str = "continue"
    compensates: str | None = None
    compensation: JSON | None = None
    operation_id: str | None = None
    position: int = 0
    #: Its retry policy, made once (every failed attempt reads it).
    policy: RetryPolicy | None = None
    #: (dependent, soft): a soft dependent runs whatever state this task ends in.
    dependents: list[tuple[TaskRun, bool]] = field(default_factory=list)
    #: When it last became ready (monotonic clock): the scheduling delay's start.
    ready_at: float = 0.0
    #: The persistence batch that must be committed before its provider is called:
    #: the one with the end of its last dependency (0: nothing to wait for).
    barrier: int = 0

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

    def claim(self) -> Claim:
        wf = self.workflow
        return Claim(
            task_id=self.id,
            name=self.name,
            workflow_id=wf.id,
            provider=self.provider,
            action=self.action,
            params=self.params,
            attempt=self.attempts,
            timeout=self.timeout,
            check_mode=wf.check_mode,
            compensates=self.compensates,
            compensation=self.compensation,
            owner=self.lease_owner or "",
            handle=self.handle,
            ready_at=self.ready_at or None,
            barrier=self.barrier,
        )


@dataclass(eq=False, slots=True)
class WorkflowRun:
    id: str
    kind: str
    status: str
    parallel_limit: int
    check_mode: bool
    rollback_enabled: bool
    started_at: datetime | None
    tasks: dict[str, TaskRun] = field(default_factory=dict)
    ready: deque[TaskRun] = field(default_factory=deque)
    running: int = 0
    unfinished: int = 0
    queued: bool = False
    cancel_requested: bool = False
    #: What made it fail (kept through a rollback, which reports it).
    error: str | None = None
    #: Set once a task with on_failure fail/rollback failed: nothing new starts.
    stopping_after: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def state(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "completed_at": utcnow() if self.status in WORKFLOW_TERMINAL else None,
            "cancel_requested": self.cancel_requested,
        }


class MemoryInventory:
    def __init__(self, resources: dict[tuple[str, str, str], JSON], provider: str) -> None:
        self._resources = resources
        self._provider = provider

    async def get(self, kind: str, name: str) -> JSON | None:
        found = self._resources.get((self._provider, kind, name))
        return None if found is None else dict(found)

    async def list(self, kind: str) -> list[JSON]:
        return [
            dict(data)
            for (provider, k, _), data in sorted(self._resources.items())
            if provider == self._provider and k == kind
        ]


class MemoryTaskStore:
    """Every workflow of this process, in memory. Subclasses persist (the hooks)."""

    leases = False

    def __init__(
        self,
        limits: Limits,
        defaults: TaskDefaults,
        *,
        worker_id: str | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.limits = limits
        self.defaults = defaults
        self.worker_id = worker_id or f"worker-{new_id()[:8]}"
        self._on_commit = on_commit
        self._workflows: dict[str, WorkflowRun] = {}
        self._tasks: dict[str, TaskRun] = {}
        self._ready_workflows: deque[WorkflowRun] = deque()
        self._provider_running: dict[str, int] = defaultdict(int)
        self._provider_blocked: dict[str, deque[TaskRun]] = defaultdict(deque)
        self._timers: set[asyncio.TimerHandle] = set()
        self._work = asyncio.Event()
        self.running = 0
        #: Claims may be made (after `recovered`), and not once the store is closing.
        self.started = False
        self._closing = False
        #: The workflows that ended, kept for inspection (memory only; see `_ended`).
        self.finished: dict[str, WorkflowRun] = {}
        #: Every event recorded, in order (memory only).
        self.events: list[dict[str, Any]] = []
        #: The inventory: (provider, kind, name) -> its data (memory only).
        self.resources: dict[tuple[str, str, str], JSON] = {}
        self._inventories: dict[str, Inventory] = {}

    # -- the TaskStore surface ---------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return True

    @property
    def commits(self) -> int:
        return 0

    @property
    def queued(self) -> int:
        return sum(len(wf.ready) for wf in self._workflows.values()) + sum(
            len(q) for q in self._provider_blocked.values()
        )

    @property
    def running_anywhere(self) -> int:
        return self.running

    async def open(self) -> list[Claim]:
        return []

    async def recovered(self) -> None:
        self.started = True
        self._work.set()

    async def close(self) -> None:
        self._closing = True
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    async def submit(self, workflow: NewWorkflow) -> None:
        dependencies: dict[str, list[tuple[str, str]]] = {t["id"]: [] for t in workflow.tasks}
        for task_id, depends_on, kind in workflow.edges:
            dependencies[task_id].append((depends_on, kind))
        tasks = sorted(workflow.tasks, key=lambda row: row["position"])
        self._load(workflow.workflow, tasks, dependencies)

    async def claim(self, limit: int) -> list[Claim]:
        """Ready tasks, round-robin over workflows, while every limit allows."""
        claims: list[Claim] = []
        if self._closing or not self.started or not self.healthy:
            return claims
        while (
            self._ready_workflows
            and len(claims) < limit
            and self.running < self.limits.global_limit
        ):
            wf = self._ready_workflows.popleft()
            wf.queued = False
            if not wf.ready or wf.running >= wf.parallel_limit:
                continue
            task = wf.ready.popleft()
            if task.status != TaskStatus.PENDING:
                self._enqueue_workflow(wf)
                continue
            if wf.stopping_after is not None and task.compensates is None:
                self._finish(task, TaskStatus.CANCELLED, stop_reason(wf.stopping_after), None)
                self._enqueue_workflow(wf)
                continue
            if self._provider_running[task.provider] >= self.limits.of_provider(task.provider):
                self._provider_blocked[task.provider].append(task)
                self._enqueue_workflow(wf)
                continue
            if not self._start(task):
                wf.ready.appendleft(task)
                break
            claims.append(task.claim())
            self._enqueue_workflow(wf)
        return claims

    async def before_call(self, claim: Claim) -> None:
        return None

    async def record_handle(self, claim: Claim, handle: JSON) -> None:
        task = self._tasks.get(claim.task_id)
        if task is not None and task.status == TaskStatus.RUNNING:
            task.handle = handle
            self._handle_recorded(task, handle)

    async def end(self, end: AttemptEnd) -> EndReport | None:
        task = self._tasks.get(end.claim.task_id)
        if task is None or task.status != TaskStatus.RUNNING:
            return None
        report = EndReport()
        self._release_slot(task)
        if end.interrupted:
            self._interrupted(task, end)
        wf = task.workflow
        decision = after_attempt(
            end.outcome,
            error=end.error,
            retryable=end.retryable,
            attempt=task.attempts,
            policy=self._policy(task),
            cancel_requested=wf.cancel_requested,
            stopped_by=None if task.compensates else wf.stopping_after,
        )
        report.status = decision.status
        if decision.status == TaskStatus.COMPLETED:
            self._complete(task, end, report)
        elif decision.status == TaskStatus.PENDING:
            report.retry_delay = decision.retry_delay
            self._again(task, decision.error, decision.retry_delay, decision.released)
        else:
            self._finish(task, decision.status, decision.error, report)
        return report

    async def settle(self, ends: Sequence[AttemptEnd], limit: int) -> Settlement:
        """Each end as `end` records it, then a claim: all in this process's memory (the
        embedded store's journal commits them together)."""
        reports = [await self.end(end) for end in ends]
        return Settlement(reports, await self.claim(limit))

    async def cancel(self, workflow_id: str) -> EndReport | None:
        """Pending tasks never start; the report lists the running ones to stop."""
        wf = self._workflows.get(workflow_id)
        if wf is None:
            return None
        wf.cancel_requested = True
        self._persist_workflow(wf)  # a crash must not forget it
        report = EndReport(status=TaskStatus.CANCELLED)
        for task in list(wf.tasks.values()):
            if task.status == TaskStatus.PENDING:
                self._finish(task, TaskStatus.CANCELLED, CANCELLED_BY_REQUEST, report)
                report.cancelled += 1
            elif task.status == TaskStatus.RUNNING:
                report.running.append(task.id)
        return report

    async def heartbeat(self, task_ids: Sequence[str]) -> set[str]:
        return set(task_ids)

    async def cancel_requested(self, workflow_ids: Sequence[str]) -> set[str]:
        return set()  # one process: its cancels stop its tasks directly

    async def expired(self) -> list[Claim]:
        return []

    async def wait_for_work(self, patience: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), patience)
        self._work.clear()

    async def wait_ended(self, workflow_id: str) -> None:
        wf = self._workflows.get(workflow_id)
        if wf is not None:
            await wf.done.wait()

    def task(self, task_id: str) -> TaskRun | None:
        """A task of a running or ended workflow (for tests)."""
        return self._tasks.get(task_id)

    def workflow(self, workflow_id: str) -> WorkflowRun | None:
        return self._workflows.get(workflow_id) or self.finished.get(workflow_id)

    def inventory(self, provider: str) -> Inventory:
        found = self._inventories.get(provider)
        if found is None:
            found = self._inventories[provider] = self._new_inventory(provider)
        return found

    def _new_inventory(self, provider: str) -> Inventory:
        return MemoryInventory(self.resources, provider)

    # -- persistence hooks (no-ops here; the embedded store writes them) ----------------

    def _persist_task(self, task: TaskRun) -> None:
        """The task's state changed."""

    def _persist_workflow(self, wf: WorkflowRun) -> None:
        """The workflow's state changed."""

    def _event(self, type_: str, data: JSON, workflow_id: str, task_id: str | None) -> None:
        self.events.append(
            {
                "at": utcnow(),
                "type": type_,
                "workflow_id": workflow_id,
                "task_id": task_id,
                "data": data,
            }
        )

    def _released_dependents(self, task: TaskRun, *, soft_only: bool) -> None:
        """The counters of the task's dependents went down (all, or the soft ones)."""

    def _inserted(self, rows: list[JSON], edges: list[tuple[str, str, str]]) -> None:
        """New tasks (compensations) joined a running workflow."""

    def _resource(self, task: TaskRun, write: ResourceWrite) -> None:
        """A completed task changed the inventory."""
        key = (task.provider, write.kind, write.name)
        if write.op == "delete":
            self.resources.pop(key, None)
        else:
            self.resources[key] = {**write.data, "name": write.name, "status": write.status}

    def _starting(self, task: TaskRun) -> bool:
        """An attempt is about to begin; False if it cannot be told (nothing starts)."""
        return True

    def _handle_recorded(self, task: TaskRun, handle: JSON) -> None:
        """The provider's handle of the running attempt is known."""

    def _barrier(self) -> int:
        """The persistence batch what is recorded now goes into (0: none)."""
        return 0

    def _ended(self, wf: WorkflowRun) -> None:
        """A workflow reached its end (kept here; the embedded store forgets it)."""
        self.finished[wf.id] = wf

    # -- loading -----------------------------------------------------------------------

    def _load(
        self,
        row: Mapping[str, Any],
        tasks: Sequence[Mapping[str, Any]],
        dependencies: Mapping[str, list[tuple[str, str]]],
    ) -> WorkflowRun:
        """A workflow into the graph: counters wired, ready tasks queued, failures
        recorded before a crash propagated, and ended if nothing is left."""
        wf = WorkflowRun(
            id=row["id"],
            kind=row["kind"],
            status=row["status"],
            parallel_limit=max(1, int(row["parallel_limit"])),
            check_mode=bool(row["check_mode"]),
            rollback_enabled=bool(row["rollback_enabled"]),
            started_at=row["started_at"],
            error=row["error"],
            cancel_requested=bool(row.get("cancel_requested", False)),
        )
        self._workflows[wf.id] = wf
        for t in tasks:
            task = self._task_run(wf, t)
            wf.tasks[task.id] = task
            self._tasks[task.id] = task
        self._link(wf, dependencies)
        wf.unfinished = sum(1 for t in wf.tasks.values() if t.status not in TERMINAL)
        for task in wf.tasks.values():
            if task.status == TaskStatus.RUNNING:  # interrupted: `open` reports it
                self._take_slot(task)
        for task in list(wf.tasks.values()):
            if task.status == TaskStatus.PENDING and task.pending == 0:
                self._schedule(task)
        for task in list(wf.tasks.values()):
            if task.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                self._propagate_failure(task, release_soft=False)
        if wf.unfinished == 0 and wf.status not in WORKFLOW_TERMINAL:
            self._finish_workflow(wf, None)
        return wf

    @staticmethod
    def _task_run(wf: WorkflowRun, t: Mapping[str, Any]) -> TaskRun:
        return TaskRun(
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
            lease_owner=t["lease_owner"],
            on_failure=t["on_failure"],
            compensates=t["compensates"],
            compensation=t["compensation"],
            operation_id=t["operation_id"],
            position=t["position"],
        )

    def _link(self, wf: WorkflowRun, edges: Mapping[str, list[tuple[str, str]]]) -> None:
        """Wire dependents and count each task's unmet dependencies."""
        for task_id, deps in edges.items():
            task = wf.tasks[task_id]
            for dep_id, kind in deps:
                dep = wf.tasks[dep_id]
                soft = kind == "soft"
                dep.dependents.append((task, soft))
                if not (dep.status == TaskStatus.COMPLETED or (soft and dep.status in TERMINAL)):
                    task.pending += 1

    # -- scheduling --------------------------------------------------------------------

    def _schedule(self, task: TaskRun) -> None:
        """Queue a pending task whose dependencies are complete (after any backoff)."""
        if task.not_before is not None:
            delay = (task.not_before - utcnow()).total_seconds()
            if delay > 0:
                loop = asyncio.get_running_loop()
                handle: asyncio.TimerHandle

                def fire() -> None:
                    self._timers.discard(handle)
                    if task.status == TaskStatus.PENDING:
                        self._make_ready(task)

                handle = loop.call_later(delay, fire)
                self._timers.add(handle)
                return
        self._make_ready(task)

    def _make_ready(self, task: TaskRun) -> None:
        wf = task.workflow
        task.ready_at = time.monotonic()
        wf.ready.append(task)
        self._enqueue_workflow(wf)

    def _enqueue_workflow(self, wf: WorkflowRun) -> None:
        if not wf.queued and wf.ready and wf.running < wf.parallel_limit:
            wf.queued = True
            self._ready_workflows.append(wf)
            self._work.set()

    def _start(self, task: TaskRun) -> bool:
        """The task's next attempt begins: Running, with its events."""
        if not self._starting(task):
            return False
        wf = task.workflow
        now = utcnow()
        self._take_slot(task)
        task.status = TaskStatus.RUNNING
        task.attempts += 1
        task.started_at = now
        task.not_before = None
        task.handle = None
        task.lease_owner = self.worker_id
        self._persist_task(task)
        self._event(
            "TaskStatusChanged",
            {"task_id": task.id, "name": task.name, "status": "Running", "attempt": task.attempts},
            wf.id,
            task.id,
        )
        if wf.status == WorkflowStatus.PENDING:
            wf.started_at = now
            self._move(wf, WorkflowStatus.RUNNING, None)
        return True

    def _take_slot(self, task: TaskRun) -> None:
        self.running += 1
        task.workflow.running += 1
        self._provider_running[task.provider] += 1

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

    def _policy(self, task: TaskRun) -> RetryPolicy:
        if task.policy is None:
            task.policy = RetryPolicy(
                task.max_attempts,
                task.retry_initial_delay,
                task.retry_max_delay,
                self.defaults.jitter,
            )
        return task.policy

    # -- ends --------------------------------------------------------------------------

    def _interrupted(self, task: TaskRun, end: AttemptEnd) -> None:
        wf = task.workflow
        if end.outcome == Outcome.COMPLETED:
            self._event(
                "TaskRecovered",
                {"task_id": task.id, "worker": self.worker_id, "output": end.output},
                wf.id,
                task.id,
            )
        else:
            self._event(
                "TaskInterrupted",
                {"task_id": task.id, "attempt": task.attempts, "error": end.error},
                wf.id,
                task.id,
            )

    def _complete(self, task: TaskRun, end: AttemptEnd, report: EndReport) -> None:
        task.output = end.output or ""
        task.error = None  # an earlier attempt's error stays in the event log
        task.result = end.result or {}
        task.progress = 100.0
        task.handle = None
        if not task.workflow.check_mode:
            for write in end.resources:
                self._resource(task, write)
                self._event(
                    "ResourceChanged",
                    write.event(task.provider, task.id),
                    task.workflow.id,
                    task.id,
                )
        self._finish(task, TaskStatus.COMPLETED, None, report)

    def _again(self, task: TaskRun, error: str | None, delay: float | None, released: bool) -> None:
        """Pending again: a retry after its backoff, or handed back (not counted)."""
        task.status = TaskStatus.PENDING
        task.error = error
        task.handle = None
        task.lease_owner = None
        data: JSON = {
            "task_id": task.id,
            "name": task.name,
            "status": "Pending",
            "attempt": task.attempts,
            "error": error,
        }
        if released:
            task.attempts -= 1
            task.not_before = None
            data["released"] = True
        else:
            task.not_before = utcnow() + timedelta(seconds=delay or 0.0)
            data.update(retrying=True, max_attempts=task.max_attempts, delay=round(delay or 0.0, 3))
        self._persist_task(task)
        self._event("TaskStatusChanged", data, task.workflow.id, task.id)
        self._schedule(task)

    def _finish(
        self, task: TaskRun, status: TaskStatus, error: str | None, report: EndReport | None
    ) -> None:
        """Record a terminal state and propagate it to dependents."""
        wf = task.workflow
        task.status = status
        task.completed_at = utcnow()
        task.lease_owner = None
        if error is not None:
            task.error = error
        self._persist_task(task)
        data: JSON = {"task_id": task.id, "name": task.name, "status": str(status)}
        if error is not None:
            data["error"] = error
        if task.operation_id is not None:
            data["operation_id"] = task.operation_id
        self._event("TaskStatusChanged", data, wf.id, task.id)
        wf.unfinished -= 1
        if status == TaskStatus.COMPLETED:
            if task.dependents:  # the counters of nothing else change
                self._released_dependents(task, soft_only=False)
            for dependent, _soft in task.dependents:
                self._release(dependent)
        else:
            cancelled = self._propagate_failure(task)
            if report is not None:
                report.cancelled += cancelled
            if (
                status == TaskStatus.FAILED
                and task.on_failure in ("fail", "rollback")
                and task.compensates is None
            ):
                stopped = self._stop_workflow(wf, task)
                if report is not None:
                    report.cancelled += stopped
        if wf.unfinished == 0:
            self._finish_workflow(wf, report)

    def _release(self, task: TaskRun) -> None:
        task.barrier = self._barrier()  # with the end that released it
        task.pending -= 1
        if task.pending == 0 and task.status == TaskStatus.PENDING:
            self._schedule(task)

    def _propagate_failure(self, failed: TaskRun, *, release_soft: bool = True) -> int:
        """Cancel every pending task below `failed` through hard edges, naming it as the
        cause, and release the soft dependents of everything that ended; return how
        many it cancelled."""
        error = dependency_reason(failed.name, failed.status)
        cancelled = 0
        stack = [failed]
        while stack:
            ended = stack.pop()
            if release_soft and any(soft for _, soft in ended.dependents):
                self._released_dependents(ended, soft_only=True)
            for dependent, soft in ended.dependents:
                if soft:
                    if release_soft:
                        self._release(dependent)
                elif dependent.status == TaskStatus.PENDING:
                    self._mark_cancelled(dependent, error)
                    cancelled += 1
                    stack.append(dependent)
        return cancelled

    def _mark_cancelled(self, task: TaskRun, error: str) -> None:
        wf = task.workflow
        task.status = TaskStatus.CANCELLED
        task.completed_at = utcnow()
        task.error = error
        self._persist_task(task)
        self._event(
            "TaskStatusChanged",
            {"task_id": task.id, "name": task.name, "status": "Cancelled", "error": error},
            wf.id,
            task.id,
        )
        wf.unfinished -= 1

    def _stop_workflow(self, wf: WorkflowRun, failed: TaskRun) -> int:
        """on_failure fail/rollback: pending work of the workflow never starts."""
        if wf.stopping_after is not None:
            return 0
        wf.stopping_after = failed.name
        reason = stop_reason(failed.name)
        stopped = 0
        for task in list(wf.tasks.values()):
            if task.status == TaskStatus.PENDING and task.compensates is None:
                self._mark_cancelled(task, reason)
                stopped += 1
        return stopped

    def _finish_workflow(self, wf: WorkflowRun, report: EndReport | None) -> None:
        end = workflow_end(
            wf.status,
            (
                EndedTask(t.name, t.status, t.error, t.on_failure, t.compensates)
                for t in wf.tasks.values()
            ),
            cancel_requested=wf.cancel_requested,
            rollback_enabled=wf.rollback_enabled,
            check_mode=wf.check_mode,
            cause=wf.error,
        )
        if end.rollback and self._start_rollback(wf, end.error or "", report):
            return
        self._move(wf, end.status, end.error)
        log.info(
            "workflow ended", workflow_id=wf.id, kind=wf.kind, status=end.status, error=end.error
        )
        if wf.kind == "batch":
            data: JSON = {"workflow_id": wf.id, "status": str(end.status), "kind": wf.kind}
            if end.error:
                data["error"] = end.error
            self._event("BatchStatusChanged", {**data, "batch_id": wf.id}, wf.id, None)
        self._workflows.pop(wf.id, None)
        for task in wf.tasks.values():
            self._tasks.pop(task.id, None)
        self._ended(wf)
        wf.done.set()

    def _move(self, wf: WorkflowRun, status: WorkflowStatus, error: str | None) -> None:
        """The workflow's new status, with its event."""
        wf.status = status
        if status != WorkflowStatus.RUNNING:
            wf.error = error
        self._persist_workflow(wf)
        data: JSON = {"workflow_id": wf.id, "status": str(status), "kind": wf.kind}
        if error:
            data["error"] = error
        self._event("WorkflowStatusChanged", data, wf.id, None)

    def _start_rollback(self, wf: WorkflowRun, cause: str, report: EndReport | None) -> bool:
        """Add compensation tasks for the workflow's completed work; False if none."""
        done = [
            DoneTask(
                id=t.id,
                name=t.name,
                provider=t.provider,
                action=t.action,
                params=t.params,
                output=t.output,
                result=t.result,
                dependencies=tuple(
                    d.id for d in wf.tasks.values() for x, _ in d.dependents if x is t
                ),
                operation_id=t.operation_id,
            )
            for t in sorted(wf.tasks.values(), key=lambda t: t.position)
            if t.status == TaskStatus.COMPLETED and t.compensates is None
        ]
        if not done:
            return False
        rows, edges = compensation_rows(done, wf.id, len(wf.tasks), self.defaults, new_id)
        self._inserted(rows, edges)
        self._move(wf, WorkflowStatus.ROLLING_BACK, cause)
        if report is not None:
            report.rollback_started = True
        self._event(
            "RollbackStarted", {"workflow_id": wf.id, "compensations": len(rows)}, wf.id, None
        )
        for row in rows:
            task = self._task_run(wf, row)
            wf.tasks[task.id] = task
            self._tasks[task.id] = task
        by_task: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for task_id, depends_on, kind in edges:
            by_task[task_id].append((depends_on, kind))
        self._link(wf, by_task)
        wf.unfinished += len(rows)
        barrier = self._barrier()  # their rows must be committed first
        for row in rows:
            task = wf.tasks[row["id"]]
            task.barrier = barrier
            if task.pending == 0:
                self._schedule(task)
        return True
