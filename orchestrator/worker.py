"""The PostgreSQL executor: workers that claim tasks from the shared database.

Several worker processes (`provisioning worker`, or `provisioning serve` with its
embedded worker) run against one database. Nothing about a workflow lives in one
process: each worker claims ready tasks (`store.claims.claim`: one statement, under
every limit, `FOR UPDATE SKIP LOCKED`, marking them `Running` with its id and a lease),
runs them through their providers and records each attempt's end in one transaction
(`store.endings.end_attempt`).

- Workers wake on `LISTEN/NOTIFY` (every claim, attempt end, submission and cancel
  notifies); they also look every `executor.poll_interval` seconds in case a
  notification was lost with a connection, and when a retry delay ends.
- A heartbeat renews the leases of the tasks a worker runs. A task whose lease expires
  (its worker was killed, or lost the database) is recovered by any other worker: what
  it started is stopped (`Provider.reap`, on the same host), and the attempt counts as a
  failed one, retried per the task's policy.
- A worker's identity is its host and data directory: restarted there, it recovers its
  own unfinished attempts at once instead of waiting for their leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.attempt import Attempt, call_provider, finished_attempt, result_record
from orchestrator.metrics import Metrics
from orchestrator.outcomes import WORKFLOW_TERMINAL, interrupted_reason, timeout_reason
from orchestrator.settings import ExecutorSettings
from orchestrator.store import claims, endings
from orchestrator.store.claims import CHANNEL_CANCEL, CHANNEL_EVENTS, CHANNEL_TASKS, Limits
from orchestrator.store.endings import AttemptEnd
from orchestrator.store.workflows import StoredWorkflow, insert_workflow
from orchestrator.webhooks import Outbox
from providers.base import JSON, ActionResult, PermanentProviderError, Provider

log = structlog.get_logger(__name__)


def worker_identity(data_dir: str) -> str:
    """`host/xxxxxxxx`: stable across restarts of the worker using this data directory."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()[:50]}/{digest}"


def _host(worker_id: str | None) -> str | None:
    return None if worker_id is None else worker_id.rpartition("/")[0]


@dataclass(eq=False, slots=True)
class _Run:
    row: dict[str, Any]
    runner: asyncio.Task[None] | None = None
    #: Why the runner was cancelled: "cancel" (the workflow's), "lost" (the lease), "stop".
    cancelled_for: str | None = None
    #: The provider call is over and its end is being recorded: not to be cancelled.
    recording: bool = False

    def interrupt(self, why: str) -> bool:
        """Cancel the provider call (not the recording of its end); False if too late."""
        if self.recording or self.cancelled_for is not None or self.runner is None:
            return False
        self.cancelled_for = why
        self.runner.cancel()
        return True


class Worker:
    """Runs the tasks it claims; usable without running any (an API-only process)."""

    def __init__(
        self,
        engine: AsyncEngine,
        providers: Mapping[str, Provider],
        settings: ExecutorSettings,
        *,
        workspace: Path,
        protected_paths: Sequence[Path] = (),
        metrics: Metrics,
        worker_id: str,
        on_commit: Callable[[], None] | None = None,
        provider_limits: Mapping[str, int] | None = None,
        outbox: Outbox | None = None,
        run_tasks: bool = True,
    ) -> None:
        self.engine = engine
        self.providers = dict(providers)
        self.settings = settings
        self.workspace = workspace
        self.protected_paths = tuple(protected_paths)
        self.metrics = metrics
        self.worker_id = worker_id
        self.run_tasks = run_tasks
        self._on_commit = on_commit
        self._outbox = outbox
        self._limits = Limits(
            global_limit=settings.global_limit,
            provider_limit=settings.provider_limit,
            provider_limits=dict(provider_limits or {}),
        )
        self._runs: dict[str, _Run] = {}
        self._wake = asyncio.Event()
        #: Set (and replaced) whenever an attempt ended anywhere: what `wait` waits on.
        self._ended = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._cancels: set[asyncio.Task[None]] = set()
        self._listener: asyncpg.Connection | None = None
        self._stopping = False
        self._queued = 0
        self._running_anywhere = 0
        self.started = False
        self.commits = 0
        self.healthy = True

    # -- the interface the service uses (shared with the in-memory Executor) --------

    @property
    def running(self) -> int:
        """Tasks running here; in a process that runs none, in all workers."""
        return len(self._runs) if self.run_tasks else self._running_anywhere

    @property
    def queued(self) -> int:
        return self._queued

    async def start(self) -> None:
        await self._listen()
        if self.run_tasks:
            await self._recover(await claims.expired_leases(self.engine, owner=self.worker_id))
            self._loops.append(asyncio.create_task(self._claim_loop(), name="claims"))
            self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
            self._loops.append(asyncio.create_task(self._recovery_loop(), name="recovery"))
        self._loops.append(asyncio.create_task(self._watch_loop(), name="watch"))
        self.started = True

    async def stop(self) -> None:
        """Stop claiming; stop the tasks running here and hand them back, the attempt not
        counted, for any worker to run at once."""
        self._stopping = True
        # The claim loop ends by itself: cancelled between a claim's commit and its
        # runners' start, it would leave claimed tasks for a lease to expire.
        self._wake.set()
        claiming = [loop for loop in self._loops if loop.get_name() == "claims"]
        for loop in self._loops:
            if loop not in claiming:
                loop.cancel()
        if claiming:
            _, stuck = await asyncio.wait(claiming, timeout=30)  # a database that hangs
            for loop in stuck:
                loop.cancel()
        await asyncio.gather(*self._loops, *self._cancels, return_exceptions=True)
        runners = [run.runner for run in self._runs.values() if run.runner is not None]
        for run in list(self._runs.values()):
            run.interrupt("stop")
        await asyncio.gather(*runners, return_exceptions=True)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def store_workflow(
        self,
        workflow: dict[str, Any],
        tasks: Sequence[dict[str, Any]],
        dependencies: Sequence[tuple[str, str, str]],
    ) -> None:
        """Store a new workflow (`insert_workflow`)."""
        await insert_workflow(self.engine, workflow, tasks, dependencies, self._outbox)

    async def submit(self, stored: StoredWorkflow) -> None:
        """A workflow was stored: whichever worker is free claims its ready tasks."""
        self._wake.set()
        await claims.notify(self.engine)

    async def cancel(self, workflow_id: str) -> bool:
        cancelled = await endings.request_cancel(
            self.engine, workflow_id, self.settings, self._outbox
        )
        if cancelled is None:
            return False
        self.metrics.tasks_total.labels("cancelled").inc(cancelled)
        self._committed()
        await self._cancel_local({workflow_id})
        return True

    async def wait(self, workflow_id: str) -> None:
        """Return once the workflow has ended (on whichever worker ran it)."""
        while True:
            ended = self._ended
            status = await claims.workflow_status(self.engine, workflow_id)
            if status is None or status in WORKFLOW_TERMINAL:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), self.settings.poll_interval)

    # -- waking --------------------------------------------------------------------

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
        task = asyncio.get_running_loop().create_task(self._cancel_local({str(payload)}))
        self._cancels.add(task)  # a reference until it is done
        task.add_done_callback(self._cancels.discard)

    def _committed(self) -> None:
        self.commits += 1
        self.metrics.commits.inc()
        if self._on_commit is not None:
            self._on_commit()

    async def _watch_loop(self) -> None:
        """Keep the listener connected; wake readers in case a notification was lost."""
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            if self._listener is None or self._listener.is_closed():
                self._listener = None
                await self._listen()
            self._wake.set()
            if self._on_commit is not None:
                self._on_commit()
            with contextlib.suppress(Exception):
                if not self.run_tasks:  # no heartbeat loop here to count them
                    self._running_anywhere = await claims.running_count(self.engine)
                    self._queued = await claims.ready_count(self.engine)

    # -- claiming ------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            woke = time.monotonic()
            try:
                due = None
                if not await self._claim_all(woke):
                    due = await claims.next_due(self.engine)
                self.healthy = True
            except Exception:
                log.exception("claiming failed; retrying")
                self.healthy = False
                due = None
            wait = self.settings.poll_interval
            if due is not None:
                wait = min(wait, max(0.0, due.timestamp() - time.time()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _claim_all(self, woke: float) -> bool:
        """Claim while there is room and work; True if it claimed anything.

        Each claimed task's scheduling delay is counted from `woke`, when this worker
        learnt that work might be ready (a notification, its own task's end, a poll)."""
        claimed = False
        while not self._stopping:
            free = self.settings.worker_limit - len(self._runs)
            if free <= 0:
                return claimed
            rows = await claims.claim(
                self.engine,
                self.worker_id,
                batch=min(free, 64),
                lease=self.settings.lease,
                limits=self._limits,
                outbox=self._outbox,
            )
            if not rows:
                return claimed
            claimed = True
            self._committed()
            delay = time.monotonic() - woke
            for row in rows:
                self.metrics.scheduling_delay.observe(delay)
                run = _Run(row)
                self._runs[row["id"]] = run
                run.runner = asyncio.create_task(self._run(run), name=f"task-{row['id']}")
            if len(rows) < min(free, 64):
                return claimed
        return claimed

    # -- running -------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        row = run.row
        end: AttemptEnd | None
        began = time.monotonic()
        try:
            result = await call_provider(
                Attempt.of(row, row["check_mode"]),
                self.providers,
                engine=self.engine,
                workspace=self.workspace,
                protected_paths=self.protected_paths,
                on_handle=self._handle_recorder(row),
            )
            end = self._completed(row, result)
        except asyncio.CancelledError:
            end = self._cancelled(run)
        except TimeoutError:
            end = self._failed(row, timeout_reason(row["timeout"]), retryable=True)
        except PermanentProviderError as exc:
            end = self._failed(row, str(exc) or type(exc).__name__, retryable=False)
        except Exception as exc:
            end = self._failed(row, str(exc) or type(exc).__name__, retryable=True)
        finally:
            self.metrics.task_duration.observe(time.monotonic() - began)
            run.recording = True
        try:
            if end is not None:
                await self._record(end)
        finally:
            self._runs.pop(row["id"], None)
            self._wake.set()

    def _completed(self, row: dict[str, Any], result: ActionResult) -> AttemptEnd:
        return AttemptEnd(
            task_id=row["id"],
            workflow_id=row["workflow_id"],
            owner=self.worker_id,
            outcome="completed",
            output=result.output,
            result=result_record(result),
            resources=result.resources,
        )

    def _failed(self, row: dict[str, Any], error: str, *, retryable: bool) -> AttemptEnd:
        return AttemptEnd(
            task_id=row["id"],
            workflow_id=row["workflow_id"],
            owner=self.worker_id,
            outcome="failed",
            error=error,
            retryable=retryable,
        )

    def _cancelled(self, run: _Run) -> AttemptEnd | None:
        row = run.row
        if run.cancelled_for == "cancel":
            return AttemptEnd(row["id"], row["workflow_id"], self.worker_id, "cancelled")
        if run.cancelled_for == "stop":
            # Handed back unspent: the others run it again at once.
            return AttemptEnd(
                row["id"],
                row["workflow_id"],
                self.worker_id,
                "released",
                error=f"handed back: worker {self.worker_id} stopped",
            )
        return None  # the lease was lost: whoever holds it now records the end

    async def _record(self, end: AttemptEnd) -> None:
        try:
            report = await endings.end_attempt(self.engine, end, self.settings, self._outbox)
        except Exception:
            # The lease will expire and another worker (or this one) retries the task.
            log.exception("could not record an attempt's end", task_id=end.task_id)
            self.healthy = False
            return
        if report is None:
            log.warning("lease lost before the attempt ended", task_id=end.task_id)
            return
        self._committed()
        if report.status != "Pending":  # a retry or a hand-back has not ended the task
            self.metrics.tasks_total.labels(report.status.lower()).inc()
        if report.cancelled:
            self.metrics.tasks_total.labels("cancelled").inc(report.cancelled)
        if report.retry_delay is not None:
            self.metrics.retries.inc()
        if report.rollback_started:
            self.metrics.rollbacks.inc()
        if report.status == "Failed":
            log.warning("task failed", task_id=end.task_id, error=end.error)

    def _handle_recorder(self, row: dict[str, Any]) -> Any:
        async def record(handle: JSON) -> None:
            # Committed before the provider waits on the work, so whoever recovers the
            # task can stop what this attempt started.
            await claims.record_handle(self.engine, row["id"], self.worker_id, handle)

        return record

    async def _cancel_local(self, workflow_ids: set[str]) -> None:
        """Stop this worker's running tasks of cancelled workflows."""
        for run in list(self._runs.values()):
            if run.row["workflow_id"] not in workflow_ids or run.recording:
                continue
            provider = self.providers.get(run.row["provider"])
            if provider is not None:
                with contextlib.suppress(Exception):
                    await provider.cancel(run.row["id"])
            run.interrupt("cancel")

    # -- leases --------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                running = list(self._runs)
                held = await claims.heartbeat(
                    self.engine, self.worker_id, running, self.settings.lease
                )
                for task_id in running:
                    run = self._runs.get(task_id)
                    # Still calling its provider but no longer ours: another worker
                    # recovered it after the lease expired.
                    if run is not None and task_id not in held and run.interrupt("lost"):
                        log.warning("lease lost; attempt abandoned", task_id=task_id)
                workflows = {run.row["workflow_id"] for run in self._runs.values()}
                await self._cancel_local(
                    await claims.cancel_requested(self.engine, list(workflows))
                )
                self._queued = await claims.ready_count(self.engine)
                self.healthy = True
            except Exception:
                log.exception("heartbeat failed")
                self.healthy = False

    async def _recovery_loop(self) -> None:
        """Apart from the heartbeat, which stopping leftovers (seconds each) must not
        delay past this worker's own leases."""
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await self._recover(await claims.expired_leases(self.engine))
            except Exception:
                log.exception("recovering expired leases failed")

    async def _recover(self, expired: list[dict[str, Any]]) -> None:
        """Retry the attempts of dead workers (or of this one's previous run)."""
        for task in expired:
            if task["id"] in self._runs:
                continue  # still running here: the next heartbeat renews its lease
            owner = task["lease_owner"]
            result = None
            # What it left running, and what it wrote, are on its own host.
            if _host(owner) == _host(self.worker_id):
                result = await finished_attempt(
                    Attempt.of(task, task["check_mode"]),
                    self.providers,
                    task["handle"],
                    engine=self.engine,
                    workspace=self.workspace,
                    protected_paths=self.protected_paths,
                )
            expired_only = owner != self.worker_id
            if result is not None:
                end = dataclasses.replace(
                    self._completed(task, result),
                    owner=owner,
                    expired_only=expired_only,
                    interrupted=True,
                )
                log.warning("recording an attempt that ended unwatched", task_id=task["id"])
            else:
                end = AttemptEnd(
                    task_id=task["id"],
                    workflow_id=task["workflow_id"],
                    owner=owner,
                    outcome="failed",
                    error=interrupted_reason(task["attempts"], f"worker {owner}"),
                    interrupted=True,
                    expired_only=expired_only,
                )
                log.warning("retrying an interrupted attempt", task_id=task["id"], worker=owner)
            await self._record(end)
