"""The orchestrator as one object: settings, store, providers and executor, wired.

Controllers call this; it validates a `WorkflowSpec` (graph and provider instances),
stores it in one transaction and hands it to the executor.
"""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
from pathlib import Path
from typing import IO

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from control_center.policy_store import seed_default_policies
from orchestrator.data_dir import private_data_dir
from orchestrator.errors import InvalidInput
from orchestrator.events import EventBus
from orchestrator.executor import Executor
from orchestrator.fields import MAX_PARALLEL_LIMIT
from orchestrator.graph import build_graph, topological_order
from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.planner import WorkflowSpec
from orchestrator.settings import Settings
from orchestrator.store.engine import create_engine, create_writer_engine, ensure_schema
from orchestrator.store.journal import utcnow
from orchestrator.store.retention import prune
from orchestrator.store.statistics import workflow_counts
from orchestrator.store.workflows import StoredWorkflow, task_row
from orchestrator.webhooks import Outbox, WebhookDispatcher
from orchestrator.worker import Worker, worker_identity
from providers.base import Provider
from providers.registry import build_instances

log = structlog.get_logger(__name__)


class AlreadyRunning(Exception):
    """Another orchestrator process owns this embedded database."""


class Orchestrator:
    """The service of one process.

    On the embedded SQLite database, the in-memory `Executor` runs every workflow (one
    process per database). On PostgreSQL, a `Worker` claims tasks from the database
    beside any other workers; with `run_tasks=False` it only submits and cancels (an
    API-only process), and `background=False` leaves webhook delivery and pruning to
    the `serve` processes (a `provisioning worker`).
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
        self.instance_types = {name: str(t["type"]) for name, t in settings.providers.items()}
        self.providers: dict[str, Provider] = build_instances(
            {
                name: {k: v for k, v in table.items() if k != "max_concurrent"}
                for name, table in settings.providers.items()
            }
        )
        #: Instances whose type runs things on this host (`local`), by name: running a
        #: task on one is a permission of its own (`run` on `<type>:<instance>`).
        self.host_instances = {
            name: self.instance_types[name]
            for name, provider in self.providers.items()
            if getattr(provider, "touches_host", False)
        }
        limits = {
            name: int(table["max_concurrent"])
            for name, table in settings.providers.items()
            if "max_concurrent" in table
        }
        self.events = EventBus()
        self.metrics = Metrics()
        self.outbox = Outbox(settings.webhooks)
        self.webhooks = WebhookDispatcher(self.engine, settings.webhooks, self.metrics)
        self.executor: Executor | Worker
        if settings.is_sqlite:
            self.executor = Executor(
                self.engine,
                self.providers,
                settings.executor,
                workspace=settings.workspace,
                protected_paths=settings.protected_paths,
                metrics=self.metrics,
                on_commit=self.committed,
                provider_limits=limits,
                writer_engine=create_writer_engine(settings),
                data_dir=Path(settings.data_dir),
                outbox=self.outbox,
            )
        else:
            self.executor = Worker(
                self.engine,
                self.providers,
                settings.executor,
                workspace=settings.workspace,
                protected_paths=settings.protected_paths,
                metrics=self.metrics,
                worker_id=worker_identity(settings.data_dir),
                on_commit=self.committed,
                provider_limits=limits,
                outbox=self.outbox,
                run_tasks=self.run_tasks,
            )
        self.metrics.watch(lambda: self.executor.running, lambda: self.executor.queued)
        self._lock: IO[str] | None = None
        self._retention: asyncio.Task[None] | None = None

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
        self.metrics.workflows.update(await workflow_counts(self.engine))
        await self.executor.start()
        if self.background:
            self.webhooks.start()
            self._retention = asyncio.create_task(self._prune_forever(), name="retention")
        log.info("orchestrator started", worker=self.executor.worker_id)

    async def refresh_workflow_counts(self) -> None:
        """On PostgreSQL other processes move workflows too: read the gauge's counts from
        the database (the in-memory executor's own counts are exact)."""
        if self.settings.is_sqlite:
            return
        counts = await workflow_counts(self.engine)
        self.metrics.workflows.clear()
        self.metrics.workflows.update(counts)

    def committed(self) -> None:
        """New events are in the log: wake the stream readers and the webhook sender."""
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
        await self.executor.stop()
        await self.webhooks.stop()
        await self.engine.dispose()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def submit(self, spec: WorkflowSpec, owner: str | None = None) -> str:
        """Validate, store and start a workflow; return its id."""
        if not spec.tasks:
            raise InvalidInput("the workflow has no tasks")
        graph = build_graph([(t.name, [*t.dependencies, *t.soft_dependencies]) for t in spec.tasks])
        for index, task in enumerate(spec.tasks):
            if task.provider not in self.providers:
                raise InvalidInput(
                    f"tasks[{index}].provider: '{task.provider}' is not a configured provider "
                    f"instance (configured: {', '.join(sorted(self.providers))})"
                )
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
            "owner": owner,
            "spec": spec.request,
            "error": None,
            "created_at": now,
            "started_at": None,
            "completed_at": None,
        }
        ids = {t.name: new_id() for t in spec.tasks}
        rows = [
            task_row(t, ids[t.name], workflow_id, order[t.name], self.settings.executor)
            for t in spec.tasks
        ]
        edges = [(ids[t.name], ids[d], "hard") for t in spec.tasks for d in t.dependencies]
        edges += [(ids[t.name], ids[d], "soft") for t in spec.tasks for d in t.soft_dependencies]
        await self.executor.store_workflow(workflow, rows, edges)
        self.committed()
        self.metrics.workflow_moved(None, "Pending")
        if spec.kind == "rollback":
            self.metrics.rollbacks.inc()
        dependencies: dict[str, list[tuple[str, str]]] = {ids[t.name]: [] for t in spec.tasks}
        for task_id, depends_on, kind in edges:
            dependencies[task_id].append((depends_on, kind))
        stored = StoredWorkflow(workflow, sorted(rows, key=lambda r: r["position"]), dependencies)
        await self.executor.submit(stored)
        return workflow_id


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
        why = (
            "(use PostgreSQL to run several workers on one database)"
            if name == "orchestrator.lock"
            else "(give each worker on a host its own data_dir)"
        )
        raise AlreadyRunning(
            f"another orchestrator is already running on {data_dir} {why}"
        ) from exc
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    return handle
