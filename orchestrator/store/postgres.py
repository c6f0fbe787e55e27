"""The shared PostgreSQL store: workers (`provisioning worker`, or `serve` with its
embedded worker) claim tasks from one database under limits that hold across all of
them, and record the ends of their attempts.

- The scheduler's group commit (`settle`): the completed attempts of a batch are
  recorded and the next tasks claimed in one call of `provisioning_settle`, one round
  trip and one transaction (`store/claims.py`). Every other end — a failure, a retry, a
  hand-back, a recovery, the last task of a workflow — is recorded in a transaction of
  its own that applies `orchestrator/rules.py` (`store/endings.py`).
- Claims carry leases: the scheduler renews them (`heartbeat`); a task whose lease
  expired (its worker was killed, or lost the database) is recovered by any worker
  (`expired`). A worker's identity is its host and data directory, so a restarted
  worker recovers its own unfinished attempts at once (`open`); a second live process
  with the same identity (two machines or images with one host name and data path) is
  refused at start: each worker holds a session advisory lock named by its identity on
  its `LISTEN` connection.
- Workers wake on `LISTEN/NOTIFY`: a submission, a hand-back, a failure and a claim
  that may have left work for others notify `provisioning_tasks` (a retry's payload
  says when it is due); a workflow's end notifies `provisioning_ended` with its id (what
  `wait_ended` waits for); events written notify `provisioning_events` (stream readers
  and the webhook sender of `serve` processes; a worker alone does not listen to it).
  Workers also look every `poll_interval` in case a notification was lost with a
  connection. A cancel made anywhere reaches the workers running that workflow's tasks
  (`on_cancel`).
- Statements that are a transaction alone run in autocommit: no BEGIN and COMMIT
  round trips.
- When the database stops answering, the log says so once (`database unreachable`),
  and once again when it answers (`database reachable again`), not once per attempt;
  the ends that could not be recorded are kept and recorded once it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import sqlalchemy.exc
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.rules import WORKFLOW_TERMINAL, Outcome, TaskStatus
from orchestrator.specs import TaskDefaults
from orchestrator.store import claims, endings
from orchestrator.store.claims import (
    CHANNEL_CANCEL,
    CHANNEL_ENDED,
    CHANNEL_EVENTS,
    CHANNEL_TASKS,
    Completion,
)
from orchestrator.store.taskstore import (
    JSON,
    AttemptEnd,
    Claim,
    EndReport,
    IdentityInUse,
    Inventory,
    Limits,
    NewWorkflow,
    Settlement,
)
from orchestrator.store.workflows import SqlInventory, write_workflow

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

log = structlog.get_logger(__name__)

#: Tasks claimed in one statement at most.
CLAIM_BATCH = 64


def _claim(row: dict[str, Any], owner: str | None = None) -> Claim:
    """A claim from a task row (or a row `provisioning_settle` returned, for `owner`)."""
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
        owner=owner or row.get("lease_owner") or "",
        handle=row["handle"],
    )


_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    sqlalchemy.exc.InterfaceError,
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached (rather than a mistake)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGES):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


class Reachability:
    """Whether the database answers, told in the log once per change."""

    def __init__(self) -> None:
        self.up = True
        self._since = 0.0
        #: Calls that failed (`orchestrator_database_errors_total`).
        self.failures = 0

    def failed(self, error: BaseException, doing: str) -> None:
        """A call failed; an outage is told once, a mistake every time (traceback)."""
        self.failures += 1
        if not is_outage(error):
            log.error(f"{doing} failed", exc_info=error)
            return
        if self.up:
            self.up = False
            self._since = time.monotonic()
            log.error(
                "database unreachable; retrying until it answers",
                error=_describe(error),
                doing=doing,
            )

    def answered(self) -> None:
        if not self.up:
            self.up = True
            log.warning(
                "database reachable again", down_for=round(time.monotonic() - self._since, 1)
            )


def _describe(error: BaseException) -> str:
    """What went wrong, without the statement and its parameters."""
    if isinstance(error, sqlalchemy.exc.StatementError) and error.orig is not None:
        error = error.orig
    while error.__cause__ is not None:  # (the driver's own error, under the adapters')
        error = error.__cause__
    return str(error).strip() or type(error).__name__


def identity_key(worker_id: str) -> int:
    """The session advisory lock (one bigint) a worker holds for its identity."""
    digest = hashlib.sha256(f"provisioning worker {worker_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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
        runs_tasks: bool = True,
        streams: bool = True,
    ) -> None:
        self.engine = engine
        #: The same pool, in autocommit: for what is one statement.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.limits = limits
        self.defaults = defaults
        self.worker_id = worker_id
        self.lease = lease
        self.poll_interval = poll_interval
        self._outbox = outbox
        self._on_commit = on_commit
        self.on_cancel = on_cancel
        #: A worker holds its identity; a process that runs no tasks keeps `queued` and
        #: `running_anywhere` current from the database (its scheduler does not heartbeat).
        self._runs_tasks = runs_tasks
        #: Whether its stream readers and webhook sender want to know of every commit
        #: anywhere (a `serve`); a worker alone does not listen for that.
        self._streams = streams
        self._wake = asyncio.Event()
        #: Workflow id -> set when it ends (`wait_ended`), with how many wait for it.
        self._ended: dict[str, tuple[asyncio.Event, int]] = {}
        #: When the earliest retry waiting out its delay is due (epoch seconds), once
        #: known; `_due_known` False: ask the database before waiting.
        self._due: float | None = None
        self._due_known = False
        self._listener: asyncpg.Connection | None = None
        self._watch: asyncio.Task[None] | None = None
        self._queued = 0
        self._running_anywhere = 0
        self.database = Reachability()
        self._settler = claims.SettleConnection(engine)
        #: Set if another process took this worker's identity: nothing more is claimed.
        self._identity_lost = False
        self._commits = 0

    @property
    def healthy(self) -> bool:
        return self.database.up and not self._identity_lost

    @property
    def commits(self) -> int:
        return self._commits

    @property
    def round_trips(self) -> int:
        """Requests on the store's own settle connection (the engine counts the rest)."""
        return self._settler.round_trips

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
        """Listen for notifications (a worker: holding its identity, or refusing to
        start); return this worker's own unfinished attempts (its previous run's, after
        a crash)."""
        await self._listen(starting=True)
        self._watch = asyncio.create_task(self._watch_loop(), name="watch")
        if not self._runs_tasks:
            return []
        rows = await claims.expired_leases(self.autocommit, owner=self.worker_id)
        return [_claim(row) for row in rows]

    async def recovered(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self._settler.close()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    # -- the TaskStore surface -------------------------------------------------------

    async def submit(self, workflow: NewWorkflow) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(
                write_workflow,
                workflow.workflow,
                workflow.tasks,
                workflow.edges,
                self._outbox,
            )
            await claims.notify_in(connection)  # whichever worker is free claims it
        self._wake.set()

    async def claim(self, limit: int) -> list[Claim]:
        """Up to `limit` ready tasks (at most `CLAIM_BATCH`); fewer only when no more is
        ready (or the database failed: then the log says so, once)."""
        return (await self.settle([], limit)).claims

    async def settle(self, ends: Sequence[AttemptEnd], limit: int) -> Settlement:
        """Completions that leave their workflow something to run, and the claim, in
        one call (`claims.settle`); every other end in a transaction of its own
        (`endings.end_attempt`); those of the completions that would end their workflow
        after the call, then a claim of the places they freed."""
        settlement = Settlement([None] * len(ends), [])
        limit = 0 if self._identity_lost else min(limit, CLAIM_BATCH)
        quick: dict[str, int] = {}
        others: list[int] = []
        #: A task given twice: the second after the first (it finds it recorded).
        again: list[int] = []
        for index, end in enumerate(ends):
            if end.claim.task_id in quick:
                again.append(index)
            elif _quick(end):
                quick[end.claim.task_id] = index
            else:
                others.append(index)
        pending = set(range(len(ends)))
        try:
            for index in others:
                settlement.reports[index] = await self._end(ends[index])
                pending.discard(index)
            settled = claims.Settled()
            if quick or limit > 0:  # (else nothing to ask: a stop's hand-backs)
                settled = await claims.settle(
                    self._settler,
                    self.engine,
                    self.worker_id,
                    [
                        Completion(task_id, ends[i].output, ends[i].result)
                        for task_id, i in quick.items()
                    ],
                    batch=limit,
                    lease=self.lease,
                    limits=self.limits,
                    outbox=self._outbox,
                )
            settlement.claims = [_claim(row, self.worker_id) for row in settled.claimed]
            if settled.ended or settled.claimed:
                self._committed()
            for task_id, index in quick.items():
                if task_id in settled.ended:
                    settlement.reports[index] = EndReport(status=TaskStatus.COMPLETED)
                    pending.discard(index)
                elif task_id not in settled.deferred:
                    log.warning("lease lost before the attempt ended", task_id=task_id)
                    pending.discard(index)
            deferred = [quick[task_id] for task_id in settled.deferred]
            for index in deferred + again:
                settlement.reports[index] = await self._end(ends[index])
                pending.discard(index)
            if deferred and len(settlement.claims) < limit:
                more = await claims.settle(
                    self._settler,
                    self.engine,
                    self.worker_id,
                    [],
                    batch=limit - len(settlement.claims),
                    lease=self.lease,
                    limits=self.limits,
                    outbox=self._outbox,
                )
                settlement.claims += [_claim(row, self.worker_id) for row in more.claimed]
                if more.claimed:
                    self._committed()
        except Exception as error:
            self.database.failed(error, "recording ends and claiming")
            settlement.unrecorded = pending
            return settlement
        self.database.answered()
        return settlement

    async def _end(self, end: AttemptEnd) -> EndReport | None:
        """One end in a transaction of its own; None if the lease was lost."""
        report = await endings.end_attempt(self.engine, end, self.defaults, self._outbox)
        if report is None:
            log.warning("lease lost before the attempt ended", task_id=end.claim.task_id)
            return None
        if report.retry_delay is not None:
            self._learn_due(time.time() + report.retry_delay)
        self._committed()
        return report

    async def before_call(self, claim: Claim) -> None:
        return None

    async def record_handle(self, claim: Claim, handle: JSON) -> None:
        # Committed before the provider lets the work start, so whoever recovers the
        # task can stop what this attempt started.
        await claims.record_handle(self.autocommit, claim.task_id, claim.owner, handle)

    async def end(self, end: AttemptEnd) -> EndReport | None:
        try:
            report = await self._end(end)
        except Exception as error:
            # The lease will expire and another worker (or this one) retries the task.
            self.database.failed(error, "recording an attempt's end")
            return None
        self.database.answered()
        return report

    async def cancel(self, workflow_id: str) -> EndReport | None:
        report = await endings.request_cancel(self.engine, workflow_id, self.defaults, self._outbox)
        if report is not None:
            self._committed()
        return report

    async def heartbeat(self, task_ids: Sequence[str]) -> set[str]:
        """Renew the leases; while the database does not answer, every task is taken
        to be still this worker's (nobody can tell otherwise)."""
        try:
            held = await claims.heartbeat(self.autocommit, self.worker_id, task_ids, self.lease)
            self._queued = await claims.ready_count(self.autocommit)
        except Exception as error:
            self.database.failed(error, "renewing leases")
            return set(task_ids)
        self.database.answered()
        return held

    async def cancel_requested(self, workflow_ids: Sequence[str]) -> set[str]:
        try:
            return await claims.cancel_requested(self.autocommit, workflow_ids)
        except Exception as error:
            self.database.failed(error, "reading cancels")
            return set()

    async def expired(self) -> list[Claim]:
        try:
            rows = await claims.expired_leases(self.autocommit)
        except Exception as error:
            self.database.failed(error, "looking for expired leases")
            return []
        return [_claim(row) for row in rows]

    async def wait_for_work(self, patience: float) -> None:
        if not self._due_known:
            try:
                due = await claims.next_due(self.autocommit)
            except Exception as error:
                self.database.failed(error, "reading when retries are due")
            else:
                self._due = None if due is None else due.timestamp()
                self._due_known = True
        if self._due is not None:
            patience = min(patience, max(0.0, self._due - time.time()))
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), patience)
        self._wake.clear()
        if self._due is not None and self._due <= time.time():
            # Its task is claimable now; when the next one is due, the database says.
            self._due, self._due_known = None, False

    async def wait_ended(self, workflow_id: str) -> None:
        """Return once the workflow has ended (on whichever worker ran it)."""
        event, waiting = self._ended.get(workflow_id, (asyncio.Event(), 0))
        self._ended[workflow_id] = (event, waiting + 1)
        try:
            while True:
                status = await claims.workflow_status(self.autocommit, workflow_id)
                if status is None or status in WORKFLOW_TERMINAL:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.poll_interval)
                event.clear()
        finally:
            event, waiting = self._ended.get(workflow_id, (event, 1))
            if waiting > 1:
                self._ended[workflow_id] = (event, waiting - 1)
            else:
                self._ended.pop(workflow_id, None)

    # -- notifications ---------------------------------------------------------------

    async def _listen(self, *, starting: bool = False) -> None:
        """Open the `LISTEN` connection (a worker's holds its identity's lock)."""
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            listener = await asyncpg.connect(
                url,
                server_settings={
                    "application_name": "provisioning",
                    # A session whose worker died without a word (its host lost) ends,
                    # and with it the identity's lock, within half a minute.
                    "tcp_keepalives_idle": "10",
                    "tcp_keepalives_interval": "5",
                    "tcp_keepalives_count": "3",
                },
            )
        except Exception as error:
            if starting and not is_outage(error):
                raise
            self.database.failed(error, "listening for notifications")
            return
        try:
            if self._runs_tasks:
                await self._hold_identity(listener, starting=starting)
            await listener.add_listener(CHANNEL_TASKS, self._on_tasks)
            if self._streams:
                await listener.add_listener(CHANNEL_EVENTS, self._on_events)
            await listener.add_listener(CHANNEL_ENDED, self._on_ended)
            await listener.add_listener(CHANNEL_CANCEL, self._on_cancel)
        except BaseException as error:
            with contextlib.suppress(Exception):
                await listener.close()
            if isinstance(error, Exception) and not isinstance(error, IdentityInUse):
                if starting and not is_outage(error):
                    raise
                self.database.failed(error, "listening for notifications")
                return
            raise
        self._listener = listener
        self.database.answered()

    async def _hold_identity(self, listener: asyncpg.Connection, *, starting: bool) -> None:
        """Take the session lock of this worker's identity. A session of a worker that
        just died may still hold it: wait for it up to one lease; then refuse."""
        key = identity_key(self.worker_id)
        deadline = time.monotonic() + (self.lease if starting else 0)
        while not await listener.fetchval("SELECT pg_try_advisory_lock($1)", key):
            if time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            holder = await listener.fetchrow(
                "SELECT a.client_addr, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.objsubid = 1 "
                "AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid",
                (key >> 32) & 0xFFFFFFFF,
                key & 0xFFFFFFFF,
            )
            where = ""
            if holder is not None:
                address = holder["client_addr"] or "a local socket"
                since = f"{holder['backend_start']:%Y-%m-%d %H:%M:%S %Z}"
                where = f" (connected from {address} since {since})"
            message = (
                f"another process already runs as worker {self.worker_id}{where}: a worker's "
                "identity is its host name and data directory, so two machines or images "
                "with the same host name and data path would take each other's tasks. Give "
                "each worker its own host name or data_dir."
            )
            if starting:
                raise IdentityInUse(message)
            self._identity_lost = True
            log.error(f"{message} Claiming stops; restart this worker.")
            return

    def _on_tasks(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        if payload:
            with contextlib.suppress(ValueError):
                self._learn_due(float(str(payload)))
        self._wake.set()
        self._committed()

    def _on_events(self, *_: object) -> None:
        self._committed()

    def _on_ended(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        waiting = self._ended.get(str(payload))
        if waiting is not None:
            waiting[0].set()

    def _on_cancel(self, _connection: object, _pid: int, _channel: str, payload: object) -> None:
        if self.on_cancel is not None:
            self.on_cancel({str(payload)})

    def _learn_due(self, due: float) -> None:
        if self._due_known:
            self._due = min(self._due if self._due is not None else math.inf, due)

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
                if not self._identity_lost:
                    await self._listen()
            self._wake.set()
            if self._on_commit is not None:
                self._on_commit()
            if not self._runs_tasks:
                try:
                    self._running_anywhere = await claims.running_count(self.autocommit)
                    self._queued = await claims.ready_count(self.autocommit)
                except Exception as error:
                    self.database.failed(error, "counting tasks")
                else:
                    self.database.answered()


def _quick(end: AttemptEnd) -> bool:
    """The common end, recorded with the next claim: completed (which `rules.after_attempt`
    makes Completed, whatever else holds) by the worker that ran it, changing no
    inventory."""
    return (
        end.outcome == Outcome.COMPLETED
        and not end.interrupted
        and not end.expired_only
        and not end.resources
    )
