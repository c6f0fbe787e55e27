"""The one scheduler: runs the attempts a `TaskStore` hands out, through their providers.

Whatever the store (in memory, the embedded SQLite database, PostgreSQL shared by
several workers), the scheduler does the same things, and decides nothing of a task's
fate itself (`orchestrator/rules.py` does, applied by the store):

- it claims ready tasks while this process has room (`executor.worker_limit`; the store
  keeps the global, per-workflow and per-provider limits), and claims again as soon as
  an attempt ends or the store says work may be ready;
- it records the ends of its attempts in batches, each with the next claim
  (`TaskStore.settle`): whatever ended while one batch was being recorded goes into the
  next, so under load many ends share one commit (on PostgreSQL, one round trip), and
  a lone end is recorded at once;
- it calls each attempt's provider, stops it at its timeout, on its workflow's cancel
  (made here or, on PostgreSQL, anywhere) or when this process stops, and reports the
  end to the store: completed, failed (retryable or not), cancelled, or released;
- the provider's handle (a process group) is recorded durably before the work starts;
- on start, the attempts a crash left running are recovered first: what they left is
  stopped (`Provider.reap`), and each counts as a failed attempt unless the provider
  knows it completed (`Provider.finished`);
- with leases (PostgreSQL), it renews them, gives up an attempt whose lease was lost,
  and recovers attempts whose leases expired elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from orchestrator.attempt import (
    Surroundings,
    call_provider,
    finished_attempt,
    provider_of,
    resource_writes,
    result_record,
)
from orchestrator.metrics import Metrics
from orchestrator.rules import Outcome, TaskStatus, interrupted_reason, timeout_reason
from orchestrator.settings import ExecutorSettings
from orchestrator.store.taskstore import (
    JSON,
    AttemptEnd,
    Claim,
    EndReport,
    NewWorkflow,
    Settlement,
    TaskStore,
)
from providers.base import ActionResult, PermanentProviderError, Provider

log = structlog.get_logger(__name__)


def _host(worker_id: str) -> str:
    return worker_id.rpartition("/")[0]


@dataclass(eq=False, slots=True)
class _Run:
    claim: Claim
    runner: asyncio.Task[None] | None = None
    #: Why the runner was cancelled: timeout, cancel (the workflow's), stop, lost (lease).
    stopped_for: str | None = None
    #: The provider call is over and its end is being recorded: not to be cancelled.
    recording: bool = False

    def interrupt(self, why: str) -> bool:
        """Cancel the provider call (not the recording of its end); False if too late."""
        if self.recording or self.stopped_for is not None or self.runner is None:
            return False
        if self.runner.done():
            return False
        self.stopped_for = why
        self.runner.cancel()
        return True


class Scheduler:
    """Runs the tasks it claims; usable without running any (an API-only process)."""

    def __init__(
        self,
        store: TaskStore,
        providers: Mapping[str, Provider],
        settings: ExecutorSettings,
        *,
        surroundings: Surroundings,
        metrics: Metrics,
        run_tasks: bool = True,
    ) -> None:
        self.store = store
        self.providers = dict(providers)
        self.settings = settings
        self.surroundings = surroundings
        self.metrics = metrics
        self.run_tasks = run_tasks
        self._runs: dict[str, _Run] = {}
        #: Ends waiting to be recorded (their runs stay in `_runs` until they are).
        self._ends: list[tuple[_Run, AttemptEnd]] = []
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        #: A settle (ends recorded, then a claim) is under way; `_again`: go round again.
        self._settling = False
        self._again = False
        self._settled = asyncio.Event()
        self._settled.set()
        #: A settle is due at the next turn of the loop (`_settle_soon`), or under way.
        self._settle_due = False
        self._settles: set[asyncio.Task[None]] = set()
        self._closed = False
        #: The claim loop is waiting for work (so stopping may cancel it).
        self._idle = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.started = False

    # -- what the service sees -------------------------------------------------------

    @property
    def worker_id(self) -> str:
        return self.store.worker_id

    @property
    def running(self) -> int:
        """Tasks running here; in a process that runs none, in all workers."""
        return len(self._runs) if self.run_tasks else self.store.running_anywhere

    @property
    def queued(self) -> int:
        return self.store.queued

    @property
    def healthy(self) -> bool:
        return self.store.healthy

    @property
    def commits(self) -> int:
        return self.store.commits

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        interrupted = await self.store.open()
        if self.run_tasks:
            for claim in interrupted:
                await self._recover(claim)
        await self.store.recovered()
        self.started = True
        if self.run_tasks:
            self._loops.append(asyncio.create_task(self._claim_loop(), name="claims"))
            if self.store.leases:
                self._loops.append(asyncio.create_task(self._heartbeat_loop(), name="leases"))
                self._loops.append(asyncio.create_task(self._recovery_loop(), name="recovery"))

    async def stop(self) -> None:
        """Stop claiming; stop the attempts running here and hand them back, not
        counted, to be run again at once (here after a restart, or by another worker)."""
        self._stopping = True
        claiming = [loop for loop in self._loops if loop.get_name() == "claims"]
        for loop in self._loops:
            if loop not in claiming or self._idle:
                loop.cancel()
        # A claim loop that is claiming ends by itself: cancelled between a claim's
        # commit and its runners' start, it would leave claimed tasks unattended.
        if claiming:
            _, stuck = await asyncio.wait(claiming, timeout=30)  # a database that hangs
            for loop in stuck:
                loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        await self._settled.wait()  # a settle under way may still bring claims
        runners = [run.runner for run in self._runs.values() if run.runner is not None]
        for run in list(self._runs.values()):
            run.interrupt("stop")
        await asyncio.gather(*runners, return_exceptions=True)
        # The hand-backs, and whatever else ended, recorded (nothing claimed now).
        while self._ends or self._settling or self._settles:
            if self._settling or self._settles:
                await asyncio.gather(self._settled.wait(), *self._settles)
            else:
                await self._settle()
        self._closed = True
        await self.store.close()

    async def submit(self, workflow: NewWorkflow) -> None:
        await self.store.submit(workflow)

    async def cancel(self, workflow_id: str) -> bool:
        """Cancel a workflow: pending tasks never start, running ones are stopped."""
        report = await self.store.cancel(workflow_id)
        if report is None:
            return False
        if report.cancelled:
            self.metrics.tasks_total.labels("cancelled").inc(report.cancelled)
        await self._stop_runs({workflow_id})
        return True

    async def wait(self, workflow_id: str) -> None:
        """Return once the workflow has ended and its end is committed."""
        await self.store.wait_ended(workflow_id)

    def cancelled_elsewhere(self, workflow_ids: set[str]) -> None:
        """Another process cancelled these workflows: stop their attempts running here."""
        assert self._loop is not None
        task = self._loop.create_task(self._stop_runs(workflow_ids))
        self._loops.append(task)
        task.add_done_callback(self._forget)

    # -- claiming ----------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            await self._settle()
            if self._stopping:
                return
            self._idle = True
            try:
                await self.store.wait_for_work(self.settings.poll_interval)
            finally:
                self._idle = False

    async def _settle(self) -> None:
        """Record the ends that are waiting, and claim while this process has room and
        the store has work, in as few settles as it takes. One at a time: what ends, or
        asks for one, during another makes that one go round again."""
        if self._settling:
            self._again = True
            return
        self._settling = True
        self._settled.clear()
        try:
            while True:
                self._again = False
                batch, self._ends = self._ends, []
                free = 0
                if not self._stopping:  # (the runs of the batch are still counted)
                    free = max(0, self.settings.worker_limit - len(self._runs) + len(batch))
                if not batch and free == 0:
                    return
                woke = time.monotonic()
                try:
                    settlement = await self.store.settle([end for _, end in batch], free)
                except Exception:
                    log.exception("recording the ends of attempts failed")
                    settlement = Settlement([None] * len(batch), [], set(range(len(batch))))
                kept = []
                for index, ((run, end), report) in enumerate(
                    zip(batch, settlement.reports, strict=True)
                ):
                    if index in settlement.unrecorded and not self._stopping:
                        kept.append((run, end))  # the database did not answer: later
                        continue
                    self._runs.pop(run.claim.task_id, None)
                    self._count(end, report)
                for claim in settlement.claims:
                    self._start(claim, woke)
                if kept:
                    self._ends[:0] = kept
                    return  # tried again when the store next says there may be work
                if self._ends or self._again:
                    continue
                # Fewer than asked: nothing more is ready now.
                if len(settlement.claims) < max(free, 1):
                    return
        finally:
            self._settling = False
            self._settled.set()

    def _settle_soon(self) -> None:
        """Settle once this turn of the event loop is over: the attempts that end in the
        same turn (a batch that was claimed together, often) share one settle."""
        if self._settling:
            self._again = True
        elif not self._settle_due:
            assert self._loop is not None
            self._settle_due = True
            self._loop.call_soon(self._settle_now)

    def _settle_now(self) -> None:
        self._settle_due = False
        if self._closed:
            return
        assert self._loop is not None
        task = self._loop.create_task(self._settle(), name="settle")
        self._settles.add(task)
        task.add_done_callback(self._settles.discard)

    def _start(self, claim: Claim, woke: float) -> None:
        assert self._loop is not None
        self.metrics.scheduling_delay.observe(time.monotonic() - (claim.ready_at or woke))
        run = _Run(claim)
        self._runs[claim.task_id] = run
        run.runner = self._loop.create_task(self._run(run), name=f"task-{claim.task_id}")

    # -- running -----------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        claim = run.claim
        timer: asyncio.TimerHandle | None = None
        end: AttemptEnd | None
        began = time.monotonic()
        try:
            try:
                await self.store.before_call(claim)
                provider = provider_of(claim, self.providers)
                if claim.timeout is not None:  # (a timer: `asyncio.timeout` costs 3x more)
                    assert self._loop is not None
                    timer = self._loop.call_later(claim.timeout, run.interrupt, "timeout")
                result = await call_provider(
                    claim,
                    provider,
                    self.surroundings,
                    self.store.inventory(claim.provider),
                    self._handle_recorder(claim),
                )
            finally:
                if timer is not None:
                    timer.cancel()
                self.metrics.task_duration.observe(time.monotonic() - began)
            end = _completed(claim, result)
        except asyncio.CancelledError:
            end = self._interrupted(run)
        except PermanentProviderError as exc:
            end = AttemptEnd(claim, Outcome.FAILED, str(exc) or type(exc).__name__, False)
        except Exception as exc:
            end = AttemptEnd(claim, Outcome.FAILED, str(exc) or type(exc).__name__, True)
        run.recording = True
        if end is None:
            self._runs.pop(claim.task_id, None)
        else:
            self._ends.append((run, end))
        self._settle_soon()

    def _interrupted(self, run: _Run) -> AttemptEnd | None:
        claim = run.claim
        if run.stopped_for == "timeout":
            return AttemptEnd(claim, Outcome.FAILED, timeout_reason(claim.timeout), True)
        if run.stopped_for == "cancel":
            return AttemptEnd(claim, Outcome.CANCELLED)
        if run.stopped_for == "stop":
            return AttemptEnd(
                claim, Outcome.RELEASED, f"handed back: worker {self.worker_id} stopped"
            )
        return None  # the lease was lost: whoever holds it now records the end

    def _handle_recorder(self, claim: Claim) -> Any:
        async def record(handle: JSON) -> None:
            await self.store.record_handle(claim, handle)

        return record

    def _count(self, end: AttemptEnd, report: EndReport | None) -> None:
        if report is None:
            return
        if report.status is not None and report.status != TaskStatus.PENDING:
            self.metrics.tasks_total.labels(report.status.lower()).inc()
        if report.status == TaskStatus.FAILED:
            claim = end.claim
            log.warning(
                "task failed",
                workflow_id=claim.workflow_id,
                task_id=claim.task_id,
                task=claim.name,
                error=end.error,
            )
        if report.cancelled:
            self.metrics.tasks_total.labels("cancelled").inc(report.cancelled)
        if report.retry_delay is not None:
            self.metrics.retries.inc()
        if report.rollback_started:
            self.metrics.rollbacks.inc()

    async def _stop_runs(self, workflow_ids: set[str]) -> None:
        """Stop this process's running attempts of cancelled workflows."""
        for run in list(self._runs.values()):
            if run.claim.workflow_id not in workflow_ids or run.recording:
                continue
            provider = self.providers.get(run.claim.provider)
            if provider is not None:
                with contextlib.suppress(Exception):
                    await provider.cancel(run.claim.task_id)
            run.interrupt("cancel")

    def _forget(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._loops.remove(task)

    # -- recovery and leases -----------------------------------------------------------

    async def _recover(self, claim: Claim) -> None:
        """An attempt nobody watches any more (a crash): stop what it left, then record it
        as completed if its provider knows it did, else as a failed attempt."""
        owner = claim.owner
        result = None
        # What it left running, and what it wrote, are on its own host.
        if _host(owner) == _host(self.worker_id):
            result = await finished_attempt(
                claim, self.providers, self.surroundings, self.store.inventory(claim.provider)
            )
        expired_only = owner != self.worker_id
        if result is not None:
            log.warning("recording an attempt that ended unwatched", task_id=claim.task_id)
            end = _completed(claim, result, interrupted=True, expired_only=expired_only)
        else:
            who = f"worker {owner}" if self.store.leases else "the orchestrator"
            log.warning("retrying an interrupted attempt", task_id=claim.task_id, worker=owner)
            end = AttemptEnd(
                claim,
                Outcome.FAILED,
                interrupted_reason(claim.attempt, who),
                True,
                interrupted=True,
                expired_only=expired_only,
            )
        self._count(end, await self.store.end(end))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                running = list(self._runs)
                held = await self.store.heartbeat(running)
                for task_id in running:
                    run = self._runs.get(task_id)
                    # Still calling its provider but no longer ours: another worker
                    # recovered it after the lease expired.
                    if run is not None and task_id not in held and run.interrupt("lost"):
                        log.warning("lease lost; attempt abandoned", task_id=task_id)
                workflows = sorted({run.claim.workflow_id for run in self._runs.values()})
                await self._stop_runs(await self.store.cancel_requested(workflows))
            except Exception:
                log.exception("heartbeat failed")

    async def _recovery_loop(self) -> None:
        """Apart from the heartbeat, which stopping leftovers (seconds each) must not
        delay past this worker's own leases."""
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                for claim in await self.store.expired():
                    if claim.task_id not in self._runs:
                        await self._recover(claim)
            except Exception:
                log.exception("recovering expired leases failed")


def _completed(
    claim: Claim, result: ActionResult, *, interrupted: bool = False, expired_only: bool = False
) -> AttemptEnd:
    return AttemptEnd(
        claim,
        Outcome.COMPLETED,
        output=result.output,
        result=result_record(result),
        resources=resource_writes(result),
        interrupted=interrupted,
        expired_only=expired_only,
    )
