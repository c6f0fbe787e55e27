"""What a requested rollback undoes, and the database's word that nothing is undone twice.

A rollback (`POST /rollback/execute`) selects the completed tasks to undo, plans their
compensations (`orchestrator.rules`) and submits them as a workflow of its own. Any
number of processes may do so at once on one database, so the guarantee is the
database's, in the transaction that stores the rollback (`insert_compensations`):

- the unique index `uq_tasks_compensation_in_flight` admits one pending or running
  compensation per task: of two rollbacks inserting one, the second waits for the first
  to commit and then fails;
- after its insert, the transaction checks that no other compensation of its tasks has
  completed (one that ended before the insert is no longer in the index), and that none
  of its tasks belongs to a workflow still running (whose own rollback could start).

Either failure is a 409 (`RollbackInProgress`, or `Conflict` for a running workflow's
work), and the transaction stores nothing. The selection checks the same before
planning, to say which rollback or workflow holds the work.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import aliased

from orchestrator.errors import Conflict, NotFound, RollbackInProgress
from orchestrator.rules import ACTIVE_WORKFLOW, DoneTask
from orchestrator.store.journal import insert_many
from orchestrator.store.models import Task, TaskDependency, Workflow

#: Statuses of a compensation that undoes, or has undone, its task.
UNDOING = ("Pending", "Running")
LIVE = (*UNDOING, "Completed")
ACTIVE = tuple(str(status) for status in ACTIVE_WORKFLOW)
_INDEX = "uq_tasks_compensation_in_flight"


def _candidates() -> Any:
    """Completed work a rollback may undo: not itself a compensation, not a check run,
    not already undone."""
    undone = select(Task.compensates).where(
        Task.compensates.is_not(None), Task.status == "Completed"
    )
    return (
        select(Task.__table__, Workflow.created_at.label("workflow_created_at"))
        .join(Workflow, Workflow.id == Task.workflow_id)
        .where(
            Task.status == "Completed",
            Task.compensates.is_(None),
            Workflow.check_mode.is_(False),
            Workflow.kind != "rollback",
            Task.id.not_in(undone),
        )
    )


async def completed_since(connection: AsyncConnection, moment: datetime) -> int:
    """How many completed tasks, not undone nor being undone, ended after `moment`."""
    undoing = select(Task.compensates).where(
        Task.compensates.is_not(None), Task.status.in_(UNDOING)
    )
    query = _candidates().where(Task.completed_at > moment, Task.id.not_in(undoing)).subquery()
    return int((await connection.execute(select(func.count()).select_from(query))).scalar_one())


async def undoable_tasks(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    operation_ids: Sequence[str] = (),
) -> list[DoneTask]:
    """What a rollback would compensate: work completed after `since`, or in the named
    operations (`op` for the latest batch that has it, or `batch_id:op`).

    `RollbackInProgress` when another rollback is undoing some of it, `Conflict` when
    some of it belongs to a workflow still running."""
    query = _candidates()
    if since is not None:
        query = query.where(Task.completed_at > since)
    async with engine.connect() as connection:
        if operation_ids:
            query = query.where(await _operation_filter(connection, operation_ids))
        rows = (await connection.execute(query.order_by(Task.completed_at))).mappings().all()
        ids = [r["id"] for r in rows]
        if ids:
            await connection.run_sync(_refuse_held, ids, None)
        deps: dict[str, list[str]] = defaultdict(list)
        if ids:
            edges = await connection.execute(
                select(TaskDependency.task_id, TaskDependency.depends_on).where(
                    TaskDependency.task_id.in_(ids)
                )
            )
            for task_id, depends_on in edges:
                deps[task_id].append(depends_on)
    order = sorted({r["workflow_created_at"] for r in rows})
    group = {moment: i for i, moment in enumerate(order)}
    return [
        DoneTask(
            id=r["id"],
            name=r["name"],
            provider=r["provider"],
            action=r["action"],
            params=r["params"],
            output=r["output"],
            result=r["result"],
            dependencies=tuple(deps[r["id"]]),
            operation_id=r["operation_id"],
            group=group[r["workflow_created_at"]],
        )
        for r in rows
    ]


async def undoable_for(
    engine: AsyncEngine, items: Sequence[tuple[str, str, str]]
) -> dict[tuple[str, str, str], list[DoneTask]]:
    """The completed, not undone tasks that created or changed each (provider instance,
    kind, name): what undoing them would delete (`POST /resources/destroy`), oldest
    first. Refused like a rollback (`_refuse_held`) when some are being undone or
    belong to a workflow still running."""
    wanted = set(items)
    providers = sorted({provider for provider, _, _ in wanted})
    found: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    async with engine.connect() as connection:
        query = _candidates().where(Task.provider.in_(providers)).order_by(Task.completed_at)
        rows = (await connection.execute(query)).mappings().all()
        by_id = {r["id"]: r for r in rows}
        for row in rows:
            for change in (row["result"] or {}).get("resources") or []:
                key = (row["provider"], change.get("kind"), change.get("name"))
                if key in wanted and change.get("op") in ("create", "update"):
                    found[key].append(row["id"])
        ids = sorted({i for chosen in found.values() for i in chosen})
        deps: dict[str, list[str]] = defaultdict(list)
        if ids:
            await connection.run_sync(_refuse_held, ids, None)
            edges = await connection.execute(
                select(TaskDependency.task_id, TaskDependency.depends_on).where(
                    TaskDependency.task_id.in_(ids)
                )
            )
            for task_id, depends_on in edges:
                deps[task_id].append(depends_on)
    order = sorted({by_id[i]["workflow_created_at"] for i in ids})
    group = {moment: n for n, moment in enumerate(order)}
    done = {
        i: DoneTask(
            id=i,
            name=by_id[i]["name"],
            provider=by_id[i]["provider"],
            action=by_id[i]["action"],
            params=by_id[i]["params"],
            output=by_id[i]["output"],
            result=by_id[i]["result"],
            dependencies=tuple(deps[i]),
            operation_id=by_id[i]["operation_id"],
            group=group[by_id[i]["workflow_created_at"]],
        )
        for i in ids
    }
    return {key: [done[i] for i in chosen] for key, chosen in found.items()}


async def _operation_filter(connection: AsyncConnection, operation_ids: Sequence[str]) -> Any:
    pairs = []
    for raw in operation_ids:
        batch_id, _, op = raw.rpartition(":")
        if not batch_id:
            latest = (
                await connection.execute(
                    select(Task.workflow_id)
                    .join(Workflow, Workflow.id == Task.workflow_id)
                    .where(Task.operation_id == op, Workflow.kind == "batch")
                    .order_by(Workflow.created_at.desc())
                    .limit(1)
                )
            ).scalar()
            if latest is None:
                raise NotFound(f"operation '{op}' not found in any batch")
            batch_id = latest
        pairs.append((Task.workflow_id == batch_id) & (Task.operation_id == op))
    condition = pairs[0]
    for pair in pairs[1:]:
        condition = condition | pair
    return condition


def insert_compensations(
    connection: Connection, rollback_id: str, tasks: Sequence[dict[str, Any]]
) -> None:
    """Insert the task rows of rollback `rollback_id`, in the caller's transaction, or
    raise `RollbackInProgress` (`Conflict` for a running workflow's work) and leave the
    transaction to be rolled back."""
    # In the order of the tasks they undo: two rollbacks inserting the same ones wait
    # for each other in one order, never in a cycle.
    rows = sorted(tasks, key=lambda t: t["compensates"] or "")
    try:
        insert_many(connection, Task, rows)
    except (IntegrityError, sqlite3.IntegrityError) as exc:
        text = str(exc)
        if _INDEX not in text and "tasks.compensates" not in text:
            raise
        raise RollbackInProgress(
            "another rollback started undoing some of this work meanwhile; "
            "ask again once it has ended"
        ) from exc
    mine = aliased(Task)
    _refuse_held(
        connection, select(mine.compensates).where(mine.workflow_id == rollback_id), rollback_id
    )


def _refuse_held(connection: Connection, ids: Any, rollback_id: str | None) -> None:
    """Raise if another compensation (than rollback `rollback_id`'s) undoes or has
    undone one of the tasks `ids` lists (ids, or a query of them), or one of them
    belongs to a workflow still running."""
    other = aliased(Task)
    holders = select(other.workflow_id, other.status).where(
        other.compensates.in_(ids), other.status.in_(LIVE)
    )
    if rollback_id is not None:
        holders = holders.where(other.workflow_id != rollback_id)
    held = connection.execute(holders.distinct()).all()
    if held:
        by = sorted({workflow_id for workflow_id, _ in held})
        if any(status in UNDOING for _, status in held):
            message = "is undoing some of this work; ask again once it has ended"
        else:
            message = "has undone some of this work meanwhile; ask again to undo the rest"
        raise RollbackInProgress(f"rollback {', '.join(by)} {message}", {"rollback_ids": by})
    running = connection.execute(
        select(Workflow.id, Workflow.status)
        .join(Task, and_(Task.workflow_id == Workflow.id, Task.id.in_(ids)))
        .where(Workflow.status.in_(ACTIVE))
        .distinct()
    ).all()
    if running:
        names = sorted(workflow_id for workflow_id, _ in running)
        if all(status == "RollingBack" for _, status in running):
            raise RollbackInProgress(
                f"workflow {', '.join(names)} is rolling back its own work; "
                "ask again once it has ended",
                {"rollback_ids": names},
            )
        raise Conflict(
            f"workflow {', '.join(names)} is still running; wait for it or cancel it, "
            "then roll back",
            {"workflow_ids": names},
        )
