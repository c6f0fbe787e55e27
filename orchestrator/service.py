"""The orchestrator as one object: settings, store, providers and executor, wired.

Controllers call this; it validates a `WorkflowSpec` (graph and provider instances),
stores it in one transaction and hands it to the executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import hashlib
import os
import socket
from pathlib import Path
from typing import IO, Any

import structlog

from control_center.gate import seed_default_policies
from orchestrator.attempt import Surroundings, action_call
from orchestrator.clock import utcnow
from orchestrator.data_dir import private_data_dir
from orchestrator.errors import InvalidInput, NotFound, ProviderFailed
from orchestrator.events import EventBus
from orchestrator.fields import MAX_PARALLEL_LIMIT
from orchestrator.graph import build_graph, topological_order
from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.records import Records
from orchestrator.resources import Catalog, Declared
from orchestrator.scheduler import Scheduler
from orchestrator.settings import Settings
from orchestrator.specs import WorkflowSpec, task_row
from orchestrator.store.checkpoints import create_checkpoint, delete_checkpoint, restore_inventory
from orchestrator.store.engine import (
    AsyncEngine,
    RoundTrips,
    count_round_trips,
    create_engine,
    create_writer_engine,
    ensure_schema,
)
from orchestrator.store.idempotency import IdempotencyKeys
from orchestrator.store.retention import prune
from orchestrator.store.sqlite import SqliteTaskStore
from orchestrator.store.taskstore import Claim, IdentityInUse, Limits, NewWorkflow, TaskStore
from orchestrator.store.workflows import insert_workflow
from orchestrator.webhooks import WebhookDispatcher, outbox_for
from providers.base import JSON, Provider, ProviderError, ResourceNotFound
from providers.registry import build_instances

log = structlog.get_logger(__name__)


class AlreadyRunning(Exception):
    """Another orchestrator process owns this embedded database, or this worker's
    identity (its data directory here; its host name and data path on PostgreSQL)."""


class Orchestrator:
    """The service of one process: the only door of the API and the CLI to the work.

    One `Scheduler` runs the tasks over the store the settings name: the embedded
    SQLite database (one process per database), or PostgreSQL shared with any other
    workers. With `run_tasks=False` it only submits and cancels (an API-only process on
    PostgreSQL), and `background=False` leaves webhook delivery and pruning to the
    `serve` processes (a `provisioning worker`).
    """

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine | None = None,
        *,
        run_tasks: bool | None = None,
        background: bool = True,
    ) -> None:
        self.settings = settings
        self.run_tasks = settings.server.worker if run_tasks is None else run_tasks
        self.background = background
        self.engine = engine or create_engine(settings)
        #: What the API and the CLI read.
        self.records = Records(self.engine)
        #: The API's Idempotency-Keys.
        self.idempotency = IdempotencyKeys(
            self.engine,
            ttl=settings.server.idempotency_ttl,
            pending_ttl=settings.server.idempotency_pending_ttl,
        )
        #: PostgreSQL: the requests this process sent to the database (`/metrics`).
        self.round_trips: RoundTrips | None = None
        self.instance_types = {name: str(t["type"]) for name, t in settings.providers.items()}
        self.providers: dict[str, Provider] = build_instances(
            {
                name: {k: _placed(v, settings) for k, v in table.items() if k != "max_concurrent"}
                for name, table in settings.providers.items()
            }
        )
        #: What the instances do, by kind and operation: planning, validation, policies.
        self.catalog = Catalog(self.providers, self.instance_types)
        self.events = EventBus()
        self.metrics = Metrics()
        self.outbox = outbox_for(settings.webhooks)
        self.webhooks = WebhookDispatcher(self.engine, settings.webhooks, self.metrics)
        self.task_defaults = settings.executor.task_defaults()
        self.surroundings = Surroundings(settings.workspace, settings.protected_paths)
        self.scheduler = Scheduler(
            self._store(),
            self.providers,
            settings.executor,
            surroundings=self.surroundings,
            metrics=self.metrics,
            run_tasks=self.run_tasks,
        )
        self.metrics.watch(lambda: self.scheduler.running, lambda: self.scheduler.queued)
        store = self.scheduler.store
        if not settings.is_sqlite:
            from orchestrator.store.postgres import PostgresTaskStore

            assert isinstance(store, PostgresTaskStore)
            round_trips = self.round_trips = count_round_trips(self.engine)
            self.metrics.watch_database(
                lambda: round_trips.count + store.round_trips, lambda: store.database.failures
            )
        self._lock: IO[str] | None = None
        self._retention: asyncio.Task[None] | None = None

    def _store(self) -> TaskStore:
        settings = self.settings
        executor = settings.executor
        limits = Limits(
            global_limit=executor.global_limit,
            provider_limit=executor.provider_limit,
            provider_limits={
                name: int(table["max_concurrent"])
                for name, table in settings.providers.items()
                if "max_concurrent" in table
            },
        )
        if settings.is_sqlite:
            return SqliteTaskStore(
                self.engine,
                create_writer_engine(settings),
                limits,
                self.task_defaults,
                data_dir=Path(settings.data_dir),
                outbox=self.outbox,
                on_commit=self.committed,
            )
        # Imported here: asyncpg (a fifth of the start-up's imports) is PostgreSQL's only.
        from orchestrator.store.postgres import PostgresTaskStore

        return PostgresTaskStore(
            self.engine,
            limits,
            self.task_defaults,
            worker_id=worker_identity(settings.data_dir),
            lease=executor.lease,
            poll_interval=executor.poll_interval,
            outbox=self.outbox,
            on_commit=self.committed,
            on_cancel=lambda workflows: self.scheduler.cancelled_elsewhere(workflows),
            runs_tasks=self.run_tasks,
            streams=self.background,
        )

    async def start(self) -> None:
        private_data_dir(self.settings.data_dir)
        if self.settings.is_sqlite:
            self._lock = _lock_data_dir(Path(self.settings.data_dir), "orchestrator.lock")
        elif self.run_tasks:
            # The worker's identity is its host and data directory: one process each.
            self._lock = _lock_data_dir(Path(self.settings.data_dir), "worker.lock")
        await ensure_schema(self.engine, self.settings)
        # Policies are enforced here too: a database that only this app opened has them.
        await seed_default_policies(self.engine)
        await self.refresh_workflow_counts()
        try:
            await self.scheduler.start()
        except IdentityInUse as exc:
            raise AlreadyRunning(str(exc)) from exc
        if self.background:
            self.webhooks.start()
            self._retention = asyncio.create_task(self._prune_forever(), name="retention")
        log.info("orchestrator started", worker=self.scheduler.worker_id)

    async def refresh_workflow_counts(self) -> None:
        """The workflows gauge, as the database has them (other processes, and the
        journal's commits, move them)."""
        counts = await self.records.workflow_counts()
        self.metrics.workflows.clear()
        self.metrics.workflows.update(counts)

    def committed(self) -> None:
        """New events are in the log: wake the stream readers and the webhook sender."""
        self.metrics.commits.inc()
        self.events.notify()
        self.webhooks.notify()

    async def _prune_forever(self) -> None:
        retention = self.settings.retention
        if not (retention.events_days or retention.workflows_days):
            return
        while True:
            try:
                removed = await prune(
                    self.engine,
                    events_days=retention.events_days or None,
                    workflows_days=retention.workflows_days or None,
                    batch_size=retention.batch_size,
                )
                if any(removed.values()):
                    log.info("pruned old records", **removed)
            except Exception:
                log.exception("pruning failed")
            await asyncio.sleep(retention.interval)

    async def stop(self) -> None:
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.gather(self._retention, return_exceptions=True)
        await self.scheduler.stop()
        await self.webhooks.stop()
        await self.engine.dispose()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def submit(self, spec: WorkflowSpec, owner: str | None = None) -> str:
        """Validate (the graph, then each task against its instance's declarations:
        `Catalog.validate`), store and start a workflow; return its id."""
        if not spec.tasks:
            raise InvalidInput("the workflow has no tasks")
        graph = build_graph([(t.name, [*t.dependencies, *t.soft_dependencies]) for t in spec.tasks])
        self.catalog.validate(spec)
        order = {name: i for i, name in enumerate(topological_order(graph))}
        parallel_limit = spec.parallel_limit or self.settings.executor.default_parallel_limit
        if not 1 <= parallel_limit <= MAX_PARALLEL_LIMIT:
            raise InvalidInput(f"parallel_limit must be between 1 and {MAX_PARALLEL_LIMIT}")
        now = utcnow()
        workflow_id = new_id()
        workflow = {
            "id": workflow_id,
            "kind": spec.kind,
            "name": spec.name,
            "status": "Pending",
            "parallel_limit": parallel_limit,
            "rollback_enabled": spec.rollback_enabled,
            "check_mode": spec.check_mode,
            "cancel_requested": False,
            "owner": owner,
            "spec": spec.request,
            "error": None,
            "created_at": now,
            "started_at": None,
            "completed_at": None,
        }
        ids = {t.name: new_id() for t in spec.tasks}
        rows = [
            task_row(t, ids[t.name], workflow_id, order[t.name], self.task_defaults)
            for t in spec.tasks
        ]
        edges = [(ids[t.name], ids[d], "hard") for t in spec.tasks for d in t.dependencies]
        edges += [(ids[t.name], ids[d], "soft") for t in spec.tasks for d in t.soft_dependencies]
        await self.scheduler.submit(NewWorkflow(workflow, rows, edges))
        self.committed()
        if spec.kind == "rollback":
            self.metrics.rollbacks.inc()
        return workflow_id

    async def record_empty_rollback(self, name: str, request: JSON) -> str:
        """A rollback that found nothing to undo, stored as a run that has ended (no
        tasks, `Completed`), so that its id reads back like any other's."""
        now = utcnow()
        workflow_id = new_id()
        workflow = {
            "id": workflow_id,
            "kind": "rollback",
            "name": name,
            "status": "Completed",
            "parallel_limit": 1,
            "rollback_enabled": False,
            "check_mode": False,
            "cancel_requested": False,
            "owner": None,
            "spec": request,
            "error": None,
            "created_at": now,
            "started_at": now,
            "completed_at": now,
        }
        await insert_workflow(self.engine, workflow, [], [])
        self.metrics.rollbacks.inc()
        return workflow_id

    async def read(self, declared: Declared, params: JSON) -> JSON:
        """Answer a read-only operation at once, outside any workflow (its params were
        checked by the caller), within the configured `wait_timeout`."""
        claim = Claim(
            task_id=new_id(),
            name=f"{declared.operation.name} {declared.kind.name}",
            workflow_id="",
            provider=declared.instance,
            action=declared.action,
            params=params,
            attempt=1,
            timeout=self.settings.server.wait_timeout,
            check_mode=False,
            compensates=None,
            compensation=None,
            owner=self.scheduler.worker_id,
        )
        inventory = self.scheduler.store.inventory(declared.instance)
        call = action_call(claim, self.surroundings, inventory, None)
        try:
            async with asyncio.timeout(self.settings.server.wait_timeout):
                result = await self.providers[declared.instance].apply(call)
        except ResourceNotFound as exc:
            raise NotFound(str(exc)) from exc
        except ProviderError as exc:
            raise ProviderFailed(f"{declared.instance}: {exc}") from exc
        except TimeoutError as exc:
            raise ProviderFailed(
                f"{declared.instance}: no answer within {self.settings.server.wait_timeout} s"
            ) from exc
        return result.result

    async def create_checkpoint(self, name: str, description: str) -> str:
        """Record the event position, the inventory and workflow states; return its id."""
        row = await create_checkpoint(self.engine, name, description, self.outbox)
        self.committed()
        return str(row["id"])

    async def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Forget a checkpoint (`NotFound` if there is none); retention no longer keeps
        what it pinned."""
        await delete_checkpoint(self.engine, checkpoint_id, self.outbox)
        self.committed()

    async def restore_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Reset the recorded inventory to the checkpoint's (the infrastructure is
        untouched)."""
        await restore_inventory(self.engine, checkpoint, self.outbox)
        self.committed()

    async def cancel(self, workflow_id: str) -> bool:
        """Cancel a workflow; False if it had already ended."""
        return await self.scheduler.cancel(workflow_id)

    async def wait(self, workflow_id: str, patience: float | None = None) -> None:
        """Return once the workflow has ended (or `patience` seconds have passed)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(patience):
                await self.scheduler.wait(workflow_id)


def _placed(value: object, settings: Settings) -> object:
    """A provider setting, with `{data_dir}` in a string standing for the data directory
    (where a provider keeps what it makes, by default: the `qemu` instance's machines)."""
    if isinstance(value, str) and "{data_dir}" in value:
        return value.replace("{data_dir}", str(Path(settings.data_dir).resolve()))
    return value


def worker_identity(data_dir: str) -> str:
    """`host/xxxxxxxx`: stable across restarts of the worker using this data directory."""
    digest = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]
    return f"{socket.gethostname()[:50]}/{digest}"


def freeze_startup_heap() -> None:
    """Leave what start-up allocated out of the cyclic garbage collector's full passes.

    The modules, apps and engines of a started process are some 125,000 objects that
    live as long as it does; each full collection walked them all, an 85 ms pause every
    few thousand tasks (tests/perf/bench_executor.py). Called by `serve` and `worker`
    once started (and by the benchmark, as they do).
    """
    gc.collect()
    gc.freeze()


def _lock_data_dir(data_dir: Path, name: str) -> IO[str]:
    """One orchestrator per embedded database (two would both resume the same tasks),
    one worker per data directory (its identity)."""
    handle = (data_dir / name).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        handle.close()
        # Say which setting separates them: the data directory holds the database.
        why = (
            "; to run a second one beside it, give it its own data directory "
            "(data_dir, or PROVISIONING_DATA_DIR) and port (serve --port, or "
            "PROVISIONING_SERVER__PORT), "
            "or use PostgreSQL to run several workers on one database"
            if name == "orchestrator.lock"
            else "; give each worker on a host its own data directory "
            "(data_dir, or PROVISIONING_DATA_DIR)"
        )
        raise AlreadyRunning(f"another orchestrator is already running on {data_dir}{why}") from exc
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
