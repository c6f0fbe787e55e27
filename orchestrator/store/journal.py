"""Group commit of executor transitions.

The executor records a transition (a task's new state, a workflow's new state, the event
that tells of it, the resources a provider changed) and awaits `flush()` before anything
may depend on it. Everything recorded while one transaction is being written goes into
the next, so under load many transitions share one commit, and a lone transition is
written at once. A task row and the event recording its change always land in the same
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from orchestrator.clock import utcnow
from orchestrator.ids import new_id
from orchestrator.store.base import Base
from orchestrator.store.models import Event, Resource, Task, TaskDependency, Workflow
from orchestrator.store.taskstore import ResourceWrite

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

log = structlog.get_logger(__name__)

TASK_STATE_COLUMNS = (
    "status",
    "attempts",
    "progress",
    "output",
    "error",
    "result",
    "not_before",
    "lease_owner",
    "lease_expires_at",
    "handle",
    "started_at",
    "completed_at",
)
WORKFLOW_STATE_COLUMNS = ("status", "error", "started_at", "completed_at", "cancel_requested")


_update_task = (
    update(Task)
    .where(Task.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}") for c in TASK_STATE_COLUMNS})
)
_update_workflow = (
    update(Workflow)
    .where(Workflow.id == bindparam("b_id"))
    .values({c: bindparam(f"b_{c}") for c in WORKFLOW_STATE_COLUMNS})
)


def _release(soft_only: bool) -> Any:
    """A task that ended releases its dependents (all of them when it completed, the
    soft ones otherwise): the counter a claim query filters on."""
    edges = select(TaskDependency.task_id).where(TaskDependency.depends_on == bindparam("b_done"))
    if soft_only:
        edges = edges.where(TaskDependency.kind == "soft")
    return (
        update(Task)
        .where(Task.id.in_(edges.scalar_subquery()))
        .values(pending_dependencies=Task.pending_dependencies - 1)
    )


_release_all = _release(soft_only=False)
_release_soft = _release(soft_only=True)


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """A task's change to the inventory, with the task that made it."""

    provider: str
    workflow_id: str
    task_id: str
    change: ResourceWrite


class JournalError(Exception):
    """A batch of transitions could not be written; the executor must stop."""


class Journal:
    """Collects transitions and writes them in as few transactions as it can.

    Transactions are written one at a time by the journal's own thread, on its own
    connection to the embedded SQLite store. A commit starts as soon as there is
    something to write and none is being written, without waiting for a turn of the
    event loop: the latency of `flush()` is on the path of every task's start.
    """

    def __init__(
        self,
        engine: Engine,
        on_commit: Callable[[], None] | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self._connection = _Connection(engine)
        self._writes = _SqliteWrites(engine.dialect)
        self._outbox = outbox
        self._thread = _Thread()
        self._on_commit = on_commit
        self._tasks: dict[str, dict[str, Any]] = {}
        self._workflows: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._released: list[str] = []
        self._released_soft: list[str] = []
        self._new_tasks: list[dict[str, Any]] = []
        self._new_edges: list[dict[str, Any]] = []
        self._resources: list[ResourceRecord] = []
        #: Flushes waiting for the next commit, and for the one being written (None: idle).
        self._waiters: list[asyncio.Future[None]] = []
        self._writing: list[asyncio.Future[None]] | None = None
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: BaseException | None = None
        #: Batches taken for writing, and committed (in that order), since the start.
        self.taken = 0
        self.commits = 0
        self._closed = False

    @property
    def failed(self) -> bool:
        return self._failure is not None

    @property
    def next_batch(self) -> int:
        """The number of the batch what is recorded now goes into at the latest: it is
        committed once `commits` reaches it."""
        return self.taken + 1

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self.flush()
        finally:
            self._closed = True
            self._thread.stop(then=self._connection.close)  # on its own thread

    # -- recording -------------------------------------------------------------------

    def task(self, task_id: str, state: dict[str, Any]) -> None:
        self._tasks[task_id] = state
        self._soon()

    def workflow(self, workflow_id: str, state: dict[str, Any]) -> None:
        self._workflows[workflow_id] = state
        self._soon()

    def event(
        self,
        type_: str,
        data: dict[str, Any],
        workflow_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        self._events.append(
            {
                "at": utcnow(),
                "type": type_,
                "workflow_id": workflow_id,
                "task_id": task_id,
                "data": data,
            }
        )
        self._soon()

    def release_dependents(self, task_id: str, *, soft_only: bool) -> None:
        (self._released_soft if soft_only else self._released).append(task_id)

    def insert_tasks(self, rows: list[dict[str, Any]], edges: list[tuple[str, str, str]]) -> None:
        """New tasks of a running workflow (compensations), written before any update."""
        self._new_tasks.extend(rows)
        self._new_edges.extend({"task_id": t, "depends_on": d, "kind": k} for t, d, k in edges)
        self._soon()

    def resource(self, record: ResourceRecord) -> None:
        self._resources.append(record)

    def _has_pending(self) -> bool:
        return bool(
            self._tasks or self._workflows or self._events or self._resources or self._new_tasks
        )

    async def flush(self) -> None:
        """Return once everything recorded so far is committed."""
        if self._failure is not None:
            raise JournalError("the journal writer has stopped") from self._failure
        if self._closed and self._has_pending():
            raise JournalError("the journal is closed: what was recorded since is lost")
        if self._has_pending():
            waiters = self._waiters
        elif self._writing is not None:
            waiters = self._writing
        else:
            return
        loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiters.append(future)
        self._write()
        await future

    async def write(self, job: Callable[[Connection], None]) -> None:
        """Run `job` in a transaction of its own on the journal's thread, the writer of
        the embedded database (a new workflow is stored so): it fails alone."""
        if self._closed:
            raise JournalError("the journal is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(failure: BaseException | None) -> None:
            if not done.done():
                if failure is None:
                    done.set_result(None)
                else:
                    done.set_exception(failure)

        self._thread.submit(
            partial(self._connection.transaction, job),
            lambda failure: loop.call_soon_threadsafe(report, failure),
        )
        await done

    # -- writing ---------------------------------------------------------------------

    def _soon(self) -> None:
        """Write what was recorded once the current callback is done (transitions
        recorded together share a commit), unless a commit is already being written:
        the next one starts when it ends."""
        if not self._scheduled and self._writing is None and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._write)

    def _write(self) -> None:
        """Start writing everything recorded, if no commit is being written."""
        self._scheduled = False
        if self._writing is not None or self._failure is not None or not self._has_pending():
            return
        if self._closed:
            return  # (`flush` says so)
        assert self._loop is not None, "the journal was not started"
        batch = self._take()
        waiters, self._waiters = self._waiters, []
        self._writing = waiters
        loop = self._loop
        writes, outbox = self._writes, self._outbox
        self._thread.submit(
            partial(
                self._connection.transaction,
                partial(_write, batch=batch, outbox=outbox, prepared=writes),
            ),
            lambda failure: loop.call_soon_threadsafe(self._written, failure),
        )

    def _written(self, failure: BaseException | None) -> None:
        waiters, self._writing = self._writing or [], None
        if failure is not None:
            self._failure = failure
            log.error("could not persist transitions; the executor stops", error=str(failure))
            error = JournalError(f"could not persist transitions: {failure}")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
            return
        self.commits += 1
        if self._on_commit is not None:
            self._on_commit()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._write()  # what was recorded meanwhile

    def _take(self) -> _Batch:
        self.taken += 1
        batch = _Batch(
            tasks=self._tasks,
            workflows=[
                {"b_id": wid, **{f"b_{c}": state[c] for c in WORKFLOW_STATE_COLUMNS}}
                for wid, state in self._workflows.items()
            ],
            events=self._events,
            released=self._released,
            released_soft=self._released_soft,
            resources=self._resources,
            new_tasks=self._new_tasks,
            new_edges=self._new_edges,
        )
        self._tasks, self._workflows, self._events = {}, {}, []
        self._released, self._released_soft, self._resources = [], [], []
        self._new_tasks, self._new_edges = [], []
        return batch


class _Prepared:
    """A statement compiled once for the journal's own SQLite connection and run with the
    driver's `executemany`. Values go through the columns' own bind processors, so rows
    are stored exactly as SQLAlchemy stores them, without its work per execution: that
    work was a third of the orchestrator's CPU time running short commands
    (tests/perf/bench_executor.py, W3)."""

    def __init__(self, statement: Any, dialect: Dialect, types: dict[str, TypeEngine[Any]]):
        compiled = statement.compile(dialect=dialect, column_keys=list(types))
        if tuple(compiled.positiontup or ()) != tuple(types):
            raise AssertionError(f"parameters in an unexpected order: {compiled.positiontup}")
        self.sql = compiled.string
        processors = [t.dialect_impl(dialect).bind_processor(dialect) for t in types.values()]
        self._processors = [(i, p) for i, p in enumerate(processors) if p is not None]

    def run(self, connection: Connection, rows: list[list[Any]]) -> None:
        """`rows`: values in the order of the types given at construction (changed)."""
        for row in rows:
            for index, process in self._processors:
                row[index] = process(row[index])
        cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, rows)
        finally:
            cursor.close()


class _SqliteWrites:
    """The task update every batch runs, prepared for the journal's SQLite engine."""

    def __init__(self, dialect: Dialect) -> None:
        columns = Task.__table__.c
        task_types = {f"b_{c}": columns[c].type for c in TASK_STATE_COLUMNS}
        self.update_task = _Prepared(_update_task, dialect, {**task_types, "b_id": columns.id.type})

    def write_tasks(self, connection: Connection, tasks: dict[str, dict[str, Any]]) -> None:
        rows = [[*(state[c] for c in TASK_STATE_COLUMNS), tid] for tid, state in tasks.items()]
        self.update_task.run(connection, rows)


class _Thread:
    """The journal's one thread: runs what it is given in order, then says how it went.

    (A `ThreadPoolExecutor` of one thread did the same with a future, a lock and a
    semaphore per call: 25 µs of the event loop's time per commit, against 3 here.)
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[
            tuple[Callable[[], object], Callable[[BaseException | None], object]] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="journal", daemon=True)
        self._thread.start()

    def submit(
        self, work: Callable[[], object], then: Callable[[BaseException | None], object]
    ) -> None:
        """Run `work`, then `then` with what it raised (None if nothing), on the thread."""
        self._queue.put((work, then))

    def stop(self, then: Callable[[], object]) -> None:
        """Run `then` after everything submitted, and end the thread."""
        failures: list[BaseException | None] = []
        self._queue.put((then, failures.append))
        self._queue.put(None)
        self._thread.join()
        if failures[0] is not None:
            raise failures[0]

    def _serve(self) -> None:
        while (item := self._queue.get()) is not None:
            work, then = item
            outcome: BaseException | None = None
            try:
                work()
            except BaseException as failure:  # reported to the loop, which decides
                outcome = failure
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                then(outcome)


class _Connection:
    """The journal thread's connection, opened on first use and kept: a checkout from
    the pool and its reset per transaction cost a tenth of a commit."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None

    def transaction(self, job: Callable[[Connection], None]) -> None:
        if self._connection is None:
            self._connection = self._engine.connect()
        with self._connection.begin():
            job(self._connection)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._engine.dispose()


def insert_many(connection: Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """INSERT `rows`; on SQLite, when they all have the same keys, through a statement
    prepared once (`_Prepared`) instead of SQLAlchemy's work per row."""
    if not rows:  # an empty executemany would insert one row of defaults
        return
    keys = tuple(rows[0])
    if connection.dialect.name != "sqlite" or any(tuple(row) != keys for row in rows):
        connection.execute(insert(model), rows)
        return
    # Per dialect instance: its bind processors hold its engine's JSON serializer.
    cache = _inserts.setdefault(connection.dialect, {})
    cache_key = (model.__tablename__, keys)
    prepared = cache.get(cache_key)
    if prepared is None:
        columns = model.__table__.c
        types = {key: columns[key].type for key in keys}
        prepared = cache[cache_key] = _Prepared(insert(model), connection.dialect, types)
    prepared.run(connection, [list(row.values()) for row in rows])


_inserts: weakref.WeakKeyDictionary[Dialect, dict[tuple[str, tuple[str, ...]], _Prepared]] = (
    weakref.WeakKeyDictionary()
)


def write_events(
    connection: Connection, events: list[dict[str, Any]], outbox: Outbox | None
) -> None:
    """Append events to the log, and their webhook deliveries to the outbox, in the
    caller's transaction."""
    if not events:  # an empty executemany would insert one row of defaults
        return
    if not outbox:
        insert_many(connection, Event, events)
        return
    returning = insert(Event).returning(Event.seq, sort_by_parameter_order=True)
    seqs = [row[0] for row in connection.execute(returning, events)]
    outbox.write(connection, events, seqs)


def _write(
    connection: Connection, batch: _Batch, outbox: Outbox | None, prepared: _SqliteWrites
) -> None:
    insert_many(connection, Task, batch.new_tasks)
    insert_many(connection, TaskDependency, batch.new_edges)
    if batch.tasks:
        prepared.write_tasks(connection, batch.tasks)
    if batch.released:
        connection.execute(_release_all, [{"b_done": t} for t in batch.released])
    if batch.released_soft:
        connection.execute(_release_soft, [{"b_done": t} for t in batch.released_soft])
    if batch.workflows:
        connection.execute(_update_workflow, batch.workflows)
    for write in batch.resources:
        write_resource(connection, write)
    if batch.events:
        write_events(connection, batch.events, outbox)


@dataclass(slots=True)
class _Batch:
    tasks: dict[str, dict[str, Any]]  # task id -> its state
    workflows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    released: list[str]
    released_soft: list[str]
    resources: list[ResourceRecord]
    new_tasks: list[dict[str, Any]]
    new_edges: list[dict[str, Any]]


def write_resource(connection: Connection, write: ResourceRecord) -> None:
    change = write.change
    key = (
        (Resource.provider == write.provider)
        & (Resource.kind == change.kind)
        & (Resource.name == change.name)
    )
    if change.op == "delete":
        connection.execute(delete(Resource).where(key))
        return
    now = utcnow()
    values = {
        "provider": write.provider,
        "kind": change.kind,
        "name": change.name,
        "status": change.status,
        "workflow_id": write.workflow_id,
        "task_id": write.task_id,
        "data": change.data,
        "updated_at": now,
    }
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(Resource).values(id=new_id(), created_at=now, **values)
    statement = statement.on_conflict_do_update(
        index_elements=["provider", "kind", "name"],
        set_={k: statement.excluded[k] for k in values if k not in ("provider", "kind", "name")},
    )
    connection.execute(statement)
