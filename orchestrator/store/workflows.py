"""Queries on workflows, tasks and resources (everything but the executor's hot path)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.store.journal import insert_many, write_events
from orchestrator.store.models import Resource, Task, TaskDependency, Workflow
from orchestrator.store.rollbacks import insert_compensations

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

ACTIVE_WORKFLOW_STATUSES = ("Pending", "Running", "RollingBack")


@dataclass(slots=True)
class StoredWorkflow:
    workflow: dict[str, Any]
    tasks: list[dict[str, Any]]
    #: task id -> (id of a task it depends on, "hard" | "soft")
    dependencies: dict[str, list[tuple[str, str]]]


async def insert_workflow(
    engine: AsyncEngine,
    workflow: dict[str, Any],
    tasks: Sequence[dict[str, Any]],
    dependencies: Sequence[tuple[str, str, str]],
    outbox: Outbox | None = None,
) -> None:
    """Store a workflow, its tasks and edges, and the event announcing it, atomically."""
    async with engine.begin() as connection:
        await connection.run_sync(write_workflow, workflow, tasks, dependencies, outbox)


def write_workflow(
    connection: Connection,
    workflow: dict[str, Any],
    tasks: Sequence[dict[str, Any]],
    dependencies: Sequence[tuple[str, str, str]],
    outbox: Outbox | None = None,
) -> None:
    """`insert_workflow` in the caller's transaction (the embedded store's journal
    writes it from its own thread)."""
    connection.execute(insert(Workflow), [workflow])
    if any(t.get("compensates") for t in tasks):  # a rollback: the database's checks
        insert_compensations(connection, workflow["id"], tasks)
    else:
        insert_many(connection, Task, list(tasks))
    edges = [{"task_id": t, "depends_on": d, "kind": k} for t, d, k in dependencies]
    insert_many(connection, TaskDependency, edges)
    submitted = {
        "at": utcnow(),
        "type": "WorkflowSubmitted",
        "workflow_id": workflow["id"],
        "task_id": None,
        "data": {
            "workflow_id": workflow["id"],
            "kind": workflow["kind"],
            "name": workflow["name"],
            "status": workflow["status"],
            "tasks": len(tasks),
        },
    }
    write_events(connection, [submitted], outbox)


async def load_unfinished(engine: AsyncEngine) -> list[StoredWorkflow]:
    """Every workflow that has not reached a terminal state, with its graph."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Workflow.__table__).where(Workflow.status.in_(ACTIVE_WORKFLOW_STATUSES))
            )
        ).mappings()
        workflows = {row["id"]: StoredWorkflow(dict(row), [], {}) for row in rows}
        if not workflows:
            return []
        ids = list(workflows)
        task_rows = await connection.execute(
            select(Task.__table__).where(Task.workflow_id.in_(ids)).order_by(Task.position)
        )
        owner: dict[str, StoredWorkflow] = {}
        for task in task_rows.mappings():
            stored = workflows[task["workflow_id"]]
            stored.tasks.append(dict(task))
            stored.dependencies[task["id"]] = []
            owner[task["id"]] = stored
        dep_rows = await connection.execute(
            select(TaskDependency.task_id, TaskDependency.depends_on, TaskDependency.kind)
            .join(Task, Task.id == TaskDependency.task_id)
            .where(Task.workflow_id.in_(ids))
        )
        for task_id, depends_on, kind in dep_rows:
            owner[task_id].dependencies[task_id].append((depends_on, kind))
    return list(workflows.values())


async def list_tasks(
    engine: AsyncEngine,
    *,
    status: str | None,
    workflow_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    conditions = []
    if status is not None:
        conditions.append(Task.status == status)
    if workflow_id is not None:
        conditions.append(Task.workflow_id == workflow_id)
    async with engine.connect() as connection:
        total = (
            await connection.execute(select(func.count()).select_from(Task).where(*conditions))
        ).scalar_one()
        rows = (
            await connection.execute(
                select(Task.__table__)
                .where(*conditions)
                .order_by(Task.created_at, Task.workflow_id, Task.position)
                .limit(limit)
                .offset(offset)
            )
        ).mappings()
        tasks = [dict(row) for row in rows]
        await _attach_dependency_names(connection, tasks)
    return tasks, int(total)


async def get_task(engine: AsyncEngine, task_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(Task.__table__).where(Task.id == task_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        task = dict(row)
        await _attach_dependency_names(connection, [task])
    return task


async def _attach_dependency_names(connection: Any, tasks: list[dict[str, Any]]) -> None:
    if not tasks:
        return
    ids = [t["id"] for t in tasks]
    found: dict[str, list[str]] = defaultdict(list)
    soft: dict[str, list[str]] = defaultdict(list)
    rows = await connection.execute(
        select(TaskDependency.task_id, TaskDependency.depends_on, TaskDependency.kind).where(
            TaskDependency.task_id.in_(ids)
        )
    )
    for task_id, depends_on, kind in rows:
        found[task_id].append(depends_on)
        if kind == "soft":
            soft[task_id].append(depends_on)
    for task in tasks:
        # Every dependency; the soft ones (run once it ended, however) are named again.
        task["dependencies"] = sorted(found.get(task["id"], []))
        task["soft_dependencies"] = sorted(soft.get(task["id"], []))


async def get_workflow(engine: AsyncEngine, workflow_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(Workflow.__table__).where(Workflow.id == workflow_id)))
            .mappings()
            .first()
        )
        if row is None:
            return None
        workflow = dict(row)
        counts = await connection.execute(
            select(Task.status, func.count())
            .where(Task.workflow_id == workflow_id)
            .group_by(Task.status)
        )
        workflow["task_counts"] = {status: int(n) for status, n in counts}
    return workflow


async def get_resource(
    engine: AsyncEngine, provider: str, kind: str, name: str
) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (
                await connection.execute(
                    select(Resource.__table__).where(
                        Resource.provider == provider, Resource.kind == kind, Resource.name == name
                    )
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else dict(row)


async def list_resources(engine: AsyncEngine, provider: str, kind: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Resource.__table__)
                .where(Resource.provider == provider, Resource.kind == kind)
                .order_by(Resource.name)
            )
        ).mappings()
        return [dict(row) for row in rows]


async def workflows_in(
    engine: AsyncEngine, kind: str, statuses: Sequence[str], limit: int
) -> list[dict[str, Any]]:
    """A kind's workflows in these statuses, newest first (no task counts)."""
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Workflow.__table__)
                .where(Workflow.kind == kind, Workflow.status.in_(statuses))
                .order_by(Workflow.created_at.desc())
                .limit(limit)
            )
        ).mappings()
        return [dict(row) for row in rows]


async def list_workflows(
    engine: AsyncEngine, *, status: str | None, kind: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    conditions = []
    if status is not None:
        conditions.append(Workflow.status == status)
    if kind is not None:
        conditions.append(Workflow.kind == kind)
    async with engine.connect() as connection:
        total = (
            await connection.execute(select(func.count()).select_from(Workflow).where(*conditions))
        ).scalar_one()
        rows = (
            await connection.execute(
                select(Workflow.__table__)
                .where(*conditions)
                .order_by(Workflow.created_at.desc())
                .limit(limit)
                .offset(offset)
            )
        ).mappings()
        workflows = [dict(row) for row in rows]
        if workflows:
            counts = await connection.execute(
                select(Task.workflow_id, Task.status, func.count())
                .where(Task.workflow_id.in_([w["id"] for w in workflows]))
                .group_by(Task.workflow_id, Task.status)
            )
            by_id: dict[str, dict[str, int]] = defaultdict(dict)
            for workflow_id, task_status, n in counts:
                by_id[workflow_id][task_status] = int(n)
            for workflow in workflows:
                workflow["task_counts"] = by_id.get(workflow["id"], {})
    return workflows, int(total)


async def tasks_of(engine: AsyncEngine, workflow_ids: Sequence[str]) -> list[dict[str, Any]]:
    """Every task of the given workflows, in workflow order."""
    if not workflow_ids:
        return []
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Task.__table__)
                .where(Task.workflow_id.in_(list(workflow_ids)))
                .order_by(Task.workflow_id, Task.position)
            )
        ).mappings()
        return [dict(row) for row in rows]


async def compensations_of(engine: AsyncEngine, task_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The compensation tasks, in any workflow, that undo the given tasks."""
    if not task_ids:
        return []
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(Task.__table__)
                .where(Task.compensates.in_(list(task_ids)))
                .order_by(Task.created_at)
            )
        ).mappings()
        return [dict(row) for row in rows]


class SqlInventory:
    """What one provider instance has recorded: its rows of the resources table (the
    `Inventory` its calls see)."""

    def __init__(self, engine: AsyncEngine, provider: str) -> None:
        self._engine = engine
        self._provider = provider

    async def get(self, kind: str, name: str) -> dict[str, Any] | None:
        row = await get_resource(self._engine, self._provider, kind, name)
        return None if row is None else {**row["data"], "status": row["status"]}

    async def list(self, kind: str) -> list[dict[str, Any]]:
        rows = await list_resources(self._engine, self._provider, kind)
        return [{**row["data"], "name": row["name"], "status": row["status"]} for row in rows]
