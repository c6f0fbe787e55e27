"""The async executor: runs persisted task graphs under limits, durably.

Rules (see docs/concepts.md):

- A task is ready when all its dependencies are `Completed`; completing a task decrements
  its dependents' counters, so nothing rescans the graph.
- A global limit, each workflow's `parallel_limit` and each provider instance's limit
  are checked before every start and never exceeded.
- Every transition goes through the journal. A task's provider call starts once the ends
  of its dependencies are committed (and, for a compensation, its own row), without
  waiting for the commit of its `Running` transition: the attempt and the handle its
  provider gives are appended to the attempt log (`store/attempt_log.py`) first.
- A failed attempt is retried with exponential backoff and jitter while attempts remain;
  a task that fails for good cancels its dependents, naming it.
- On start, workflows left unfinished by a previous process are resumed: tasks it left
  `Running` (in the store, or in the attempt log only) have whatever it started stopped
  (`Provider.reap`), count as a failed attempt and are retried by their policy.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.attempt import (
    Attempt,
    call_provider,
    compensation_rows,
    finished_attempt,
    result_record,
)
from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.outcomes import (
    CANCELLED_BY_REQUEST,
    TERMINAL,
    WORKFLOW_TERMINAL,
    EndedTask,
    backoff_delay,
    dependency_reason,
    interrupted_reason,
    stop_reason,
    timeout_reason,
    workflow_end,
)
from orchestrator.rollback import DoneTask
from orchestrator.settings import ExecutorSettings
from orchestrator.store.attempt_log import AttemptLog, LoggedAttempt
from orchestrator.store.journal import Journal, ResourceWrite, utcnow
from orchestrator.store.workflows import StoredWorkflow, load_unfinished, write_workflow
from orchestrator.webhooks import Outbox
from providers.base import JSON, ActionResult, PermanentProviderError, Provider

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
    #: (dependent, soft): a soft dependent runs whatever state this task ends in.
    dependents: list[tuple[TaskRun, bool]] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    #: When it last became ready (monotonic clock): the scheduling delay's start.
    ready_at: float = 0.0
    #: The journal batch that must be committed before its provider is called: the one
    #: with the end of its last dependency (0: nothing to wait for).
    ready_batch: int = 0
    #: Set when the attempt's timeout cancelled it.
    timed_out: bool = False

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

    def state(self, error: str | None = None) -> dict[str, Any]:
        return {
            "status": self.status,
            "error": error,
            "started_at": self.started_at,
            "completed_at": utcnow() if self.status in WORKFLOW_TERMINAL else None,
        }


class Executor:
    """Runs every unfinished workflow of the store to a terminal state."""

    def __init__(
        self,
        engine: AsyncEngine,
        providers: Mapping[str, Provider],
        settings: ExecutorSettings,
        *,
        workspace: Path,
        protected_paths: Sequence[Path] = (),
        metrics: Metrics,
        on_commit: Callable[[], None] | None = None,
        provider_limits: Mapping[str, int] | None = None,
        writer_engine: Engine,
        data_dir: Path,
        outbox: Outbox | None = None,
    ) -> None:
        self.engine = engine
        self.providers = dict(providers)
        self.settings = settings
        self.workspace = workspace
        self.protected_paths = tuple(protected_paths)
        self.worker_id = f"worker-{new_id()[:8]}"
        self.metrics = metrics
        self._outbox = outbox
        self.journal = Journal(writer_engine, on_commit=self._committed(on_commit), outbox=outbox)
        self._attempts = AttemptLog(data_dir / "attempts.log", self.journal)
        #: What the attempt log told at start, until every unfinished workflow is resumed.
        self._logged: dict[str, LoggedAttempt] = {}
        self._provider_limits = dict(provider_limits or {})
        self._workflows: dict[str, WorkflowRun] = {}
        self._ready_workflows: deque[WorkflowRun] = deque()
        self._provider_running: dict[str, int] = defaultdict(int)
        self._provider_blocked: dict[str, deque[TaskRun]] = defaultdict(deque)
        self._timers: set[asyncio.TimerHandle] = set()
        self.running = 0
        self._stopping = False
        #: Why the attempt log could not be written: nothing more may start.
        self._log_failure: OSError | None = None
        self.started = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def healthy(self) -> bool:
        return not self.journal.failed and self._log_failure is None

    @property
    def commits(self) -> int:
        return self.journal.commits

    def _committed(self, then: Callable[[], None] | None) -> Callable[[], None]:
        def committed() -> None:
            self.metrics.commits.inc()
            if then is not None:
                then()

        return committed

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.journal.start()
        self._attempts.open()
        self._logged = self._attempts.read()
        for stored in await load_unfinished(self.engine):
            await self._resume(stored)
        self._logged = {}
        await self.journal.flush()  # what the log told is in the store now
        self._attempts.reset()
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
        try:
            await self.journal.close()
        finally:
            self._attempts.close()

    # -- public operations -----------------------------------------------------------

    async def store_workflow(
        self,
        workflow: dict[str, Any],
        tasks: Sequence[dict[str, Any]],
        dependencies: Sequence[tuple[str, str, str]],
    ) -> None:
        """Store a new workflow (`insert_workflow`), through the journal's writer."""
        await self.journal.write(
            partial(
                write_workflow,
                workflow=workflow,
                tasks=tasks,
                dependencies=dependencies,
                outbox=self._outbox,
            )
        )

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
                self._finish(task, "Cancelled", error=CANCELLED_BY_REQUEST)
            elif task.status == "Running" and task.runner is not None:
                runner = task.runner  # the task may end while the provider is stopping it
                task.cancel_reason = CANCELLED_BY_REQUEST
                provider = self.providers.get(task.provider)
                if provider is not None:
                    await provider.cancel(task.id)
                runner.cancel()
        await self.journal.flush()
        return True

    async def wait(self, workflow_id: str) -> None:
        """Return once the workflow has ended here and its end is committed."""
        wf = self._workflows.get(workflow_id)
        if wf is not None:
            await wf.done.wait()
        await self.journal.flush()

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
            rollback_enabled=bool(row["rollback_enabled"]),
            started_at=row["started_at"],
            error=row["error"],
        )
        self._workflows[wf.id] = wf
        for t in stored.tasks:
            wf.tasks[t["id"]] = self._task_run(wf, self._with_logged_attempt(t))
        self._link(wf, stored.dependencies)
        wf.unfinished = sum(1 for t in wf.tasks.values() if t.status not in TERMINAL)
        for task in wf.tasks.values():
            if task.status == "Running":
                await self._recover_interrupted(task)
        for task in list(wf.tasks.values()):
            if task.status == "Pending" and task.pending == 0:
                self._schedule(task)
        # A failure recorded before a crash may not have propagated yet.
        for task in list(wf.tasks.values()):
            if task.status in ("Failed", "Cancelled"):
                self._propagate_failure(task, release_soft=False)
        # (A recovered attempt may already have ended it.)
        if wf.unfinished == 0 and wf.status not in WORKFLOW_TERMINAL:
            self._finish_workflow(wf)

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
            on_failure=t["on_failure"],
            compensates=t["compensates"],
            compensation=t["compensation"],
            operation_id=t["operation_id"],
        )

    def _link(self, wf: WorkflowRun, edges: Mapping[str, list[tuple[str, str]]]) -> None:
        """Wire dependents and count each task's unmet dependencies."""
        for task_id, deps in edges.items():
            task = wf.tasks[task_id]
            for dep_id, kind in deps:
                dep = wf.tasks[dep_id]
                soft = kind == "soft"
                dep.dependents.append((task, soft))
                if not (dep.status == "Completed" or (soft and dep.status in TERMINAL)):
                    task.pending += 1

    async def _recover_interrupted(self, task: TaskRun) -> None:
        result = await finished_attempt(
            self._attempt(task),
            self.providers,
            task.handle,
            engine=self.engine,
            workspace=self.workspace,
            protected_paths=self.protected_paths,
        )
        if result is not None:
            log.warning("recording an attempt that ended unwatched", task_id=task.id)
            self.journal.event(
                "TaskRecovered",
                {"task_id": task.id, "worker": self.worker_id, "output": result.output},
                task.workflow.id,
                task.id,
            )
            self._complete(task, result)
            return
        error = interrupted_reason(task.attempts)
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
        task.ready_at = time.monotonic()
        wf.ready.append(task)
        self._enqueue_workflow(wf)

    def _enqueue_workflow(self, wf: WorkflowRun) -> None:
        if not wf.queued and wf.ready and wf.running < wf.parallel_limit:
            wf.queued = True
            self._ready_workflows.append(wf)

    def _provider_limit(self, provider: str) -> int:
        return self._provider_limits.get(provider, self.settings.provider_limit)

    def _pump(self) -> None:
        """Start ready tasks, round-robin over workflows, while every limit allows.

        Nothing starts before `start` has recovered every workflow and emptied the
        attempt log (a backoff timer may fire meanwhile), nor once the log has failed."""
        if self._stopping or not self.started or self._log_failure is not None:
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
            if wf.stopping_after is not None and task.compensates is None:
                self._finish(task, "Cancelled", error=stop_reason(wf.stopping_after))
                self._enqueue_workflow(wf)
                continue
            if self._provider_running[task.provider] >= self._provider_limit(task.provider):
                self._provider_blocked[task.provider].append(task)
                self._enqueue_workflow(wf)
                continue
            if not self._start(task):
                wf.ready.appendleft(task)
                return
            self._enqueue_workflow(wf)

    def _start(self, task: TaskRun) -> bool:
        """Start the task's next attempt; False if the attempt log cannot tell it (then
        nothing starts any more: the executor is unhealthy)."""
        wf = task.workflow
        try:
            self._attempts.started(task.id, task.attempts + 1)
        except OSError as exc:
            self._log_failure = exc
            log.error("cannot write the attempt log; no task starts any more", error=str(exc))
            return False
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
            self.metrics.workflow_moved("Pending", "Running")
            wf.status = "Running"
            wf.started_at = now
            self.journal.workflow(wf.id, wf.state())
            self.journal.event(
                "WorkflowStatusChanged",
                {"workflow_id": wf.id, "status": "Running", "kind": wf.kind},
                wf.id,
            )
        self.metrics.scheduling_delay.observe(time.monotonic() - task.ready_at)
        task.timed_out = False
        assert self._loop is not None, "the executor was not started"
        task.runner = self._loop.create_task(self._run(task), name=f"task-{task.id}")
        return True

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
        timer: asyncio.TimerHandle | None = None
        try:
            if self.journal.commits < task.ready_batch or self.journal.failed:
                await self.journal.flush()
            if task.timeout is not None:  # (a timer: `asyncio.timeout` costs 3x more)
                assert self._loop is not None
                timer = self._loop.call_later(task.timeout, self._time_out, task)
            began = time.monotonic()
            try:
                result = await self._call_provider(task)
            finally:
                if timer is not None:
                    timer.cancel()
                self.metrics.task_duration.observe(time.monotonic() - began)
        except asyncio.CancelledError:
            self._release_slot(task)
            if task.timed_out:
                self._after_failure(task, timeout_reason(task.timeout), retryable=True)
            elif task.cancel_reason is not None:
                self._finish(task, "Cancelled", error=task.cancel_reason)
            else:
                # The executor is stopping: the task stays Running in the store and a
                # restarted orchestrator retries it.
                return
            self._pump()
            return
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

    def _time_out(self, task: TaskRun) -> None:
        runner = task.runner
        # (Not when a stop or a cancel is already stopping it: that decides its end.)
        if runner is None or runner.done() or runner.cancelling() or self._stopping:
            return
        task.timed_out = True
        runner.cancel()

    async def _call_provider(self, task: TaskRun) -> ActionResult:
        return await call_provider(
            self._attempt(task),
            self.providers,
            engine=self.engine,
            workspace=self.workspace,
            protected_paths=self.protected_paths,
            on_handle=self._handle_recorder(task),
            enforce_timeout=False,  # `_run` does
        )

    @staticmethod
    def _attempt(task: TaskRun) -> Attempt:
        return Attempt(
            task_id=task.id,
            name=task.name,
            workflow_id=task.workflow.id,
            provider=task.provider,
            action=task.action,
            params=task.params,
            attempt=task.attempts,
            timeout=task.timeout,
            check_mode=task.workflow.check_mode,
            compensates=task.compensates,
            compensation=task.compensation,
        )

    def _handle_recorder(self, task: TaskRun) -> Any:
        async def record(handle: JSON) -> None:
            # In the attempt log before the provider waits on the work, so a restarted
            # orchestrator can find and stop what this attempt started; committed soon.
            task.handle = handle
            try:
                self._attempts.handle(task.id, task.attempts, handle)
            except OSError as exc:  # the provider stops what it started, and it fails
                self._log_failure = exc
                log.error("cannot write the attempt log; no task starts any more", error=str(exc))
                raise
            self.journal.task(task.id, task.state())

        return record

    def _complete(self, task: TaskRun, result: ActionResult) -> None:
        task.output = result.output
        task.error = None  # an earlier attempt's error stays in the event log
        task.result = result_record(result)
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
            self._finish(task, "Cancelled", error=CANCELLED_BY_REQUEST)
            return
        if retryable and task.attempts < task.max_attempts:
            delay = backoff_delay(
                task.attempts,
                task.retry_initial_delay,
                task.retry_max_delay,
                self.settings.retry.jitter,
            )
            self.metrics.retries.inc()
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

    def _finish(self, task: TaskRun, status: str, *, error: str | None = None) -> None:
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
        if task.operation_id is not None:
            data["operation_id"] = task.operation_id
        self.journal.event("TaskStatusChanged", data, wf.id, task.id)
        wf.unfinished -= 1
        self.metrics.tasks_total.labels(status.lower()).inc()
        if status == "Failed":
            log.warning(
                "task failed", workflow_id=wf.id, task_id=task.id, task=task.name, error=error
            )
        if status == "Completed":
            if task.dependents:  # the counters of nothing else change
                self.journal.release_dependents(task.id, soft_only=False)
            for dependent, _soft in task.dependents:
                self._release(dependent)
        else:
            self._propagate_failure(task)
            if status == "Failed" and task.on_failure in ("fail", "rollback"):
                self._stop_workflow(wf, task)
        if wf.unfinished == 0:
            self._finish_workflow(wf)

    def _release(self, task: TaskRun) -> None:
        task.ready_batch = self.journal.next_batch  # with the end that released it
        task.pending -= 1
        if task.pending == 0 and task.status == "Pending":
            self._schedule(task)

    def _propagate_failure(self, failed: TaskRun, *, release_soft: bool = True) -> None:
        """Cancel every pending task below `failed` through hard edges, naming it as the
        cause, and release the soft dependents of everything that ended."""
        error = dependency_reason(failed.name, failed.status)
        stack = [failed]
        while stack:
            ended = stack.pop()
            if release_soft and any(soft for _, soft in ended.dependents):
                self.journal.release_dependents(ended.id, soft_only=True)
            for dependent, soft in ended.dependents:
                if soft:
                    if release_soft:
                        self._release(dependent)
                elif dependent.status == "Pending":
                    self._mark_cancelled(dependent, error)
                    stack.append(dependent)

    def _mark_cancelled(self, task: TaskRun, error: str) -> None:
        wf = task.workflow
        task.status = "Cancelled"
        task.completed_at = utcnow()
        task.error = error
        self.journal.task(task.id, task.state())
        self.journal.event(
            "TaskStatusChanged",
            {"task_id": task.id, "name": task.name, "status": "Cancelled", "error": error},
            wf.id,
            task.id,
        )
        wf.unfinished -= 1
        self.metrics.tasks_total.labels("cancelled").inc()

    def _stop_workflow(self, wf: WorkflowRun, failed: TaskRun) -> None:
        """on_failure fail/rollback: pending work of the workflow never starts."""
        if wf.stopping_after is not None:
            return
        wf.stopping_after = failed.name
        reason = stop_reason(failed.name)
        for task in list(wf.tasks.values()):
            if task.status == "Pending" and task.compensates is None:
                self._mark_cancelled(task, reason)

    def _finish_workflow(self, wf: WorkflowRun) -> None:
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
        if end.rollback and self._start_rollback(wf, end.error or ""):
            return
        self._end_workflow(wf, end.status, end.error)

    def _end_workflow(self, wf: WorkflowRun, status: str, error: str | None) -> None:
        self.metrics.workflow_moved(wf.status, status)
        wf.status = status
        self.journal.workflow(wf.id, wf.state(error))
        data: JSON = {"workflow_id": wf.id, "status": status, "kind": wf.kind}
        if error:
            data["error"] = error
        self.journal.event("WorkflowStatusChanged", data, wf.id)
        log.info("workflow ended", workflow_id=wf.id, kind=wf.kind, status=status, error=error)
        if wf.kind == "batch":
            self.journal.event("BatchStatusChanged", {**data, "batch_id": wf.id}, wf.id)
        self._workflows.pop(wf.id, None)
        wf.done.set()

    def _start_rollback(self, wf: WorkflowRun, cause: str) -> bool:
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
            for t in wf.tasks.values()
            if t.status == "Completed" and t.compensates is None
        ]
        if not done:
            return False
        rows, edges = compensation_rows(done, wf.id, len(wf.tasks), self.settings, new_id)
        self.journal.insert_tasks(rows, edges)
        self.metrics.workflow_moved(wf.status, "RollingBack")
        self.metrics.rollbacks.inc()
        wf.status = "RollingBack"
        wf.error = cause
        self.journal.workflow(wf.id, wf.state(cause))
        self.journal.event(
            "WorkflowStatusChanged",
            {"workflow_id": wf.id, "status": "RollingBack", "kind": wf.kind, "error": cause},
            wf.id,
        )
        self.journal.event(
            "RollbackStarted", {"workflow_id": wf.id, "compensations": len(rows)}, wf.id
        )
        for row in rows:
            wf.tasks[row["id"]] = self._task_run(wf, row)
        by_task: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for task_id, depends_on, kind in edges:
            by_task[task_id].append((depends_on, kind))
        self._link(wf, by_task)
        wf.unfinished += len(rows)
        for row in rows:
            task = wf.tasks[row["id"]]
            task.ready_batch = self.journal.next_batch  # its row must be committed first
            if task.pending == 0:
                self._schedule(task)
        return True
