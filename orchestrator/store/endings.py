"""How a worker's attempt ends, recorded in the shared PostgreSQL database.

The common end, a completion that leaves its workflow something to run, is recorded
with the worker's next claim (`claims.settle`). Every other one (a failure, a retry, a
hand-back, a recovery, the last task of a workflow) ends here in one transaction that
locks its workflow's row first (so the last two
tasks of a workflow, ending on two workers, cannot both miss that the workflow is
done), checks that the worker still holds the task's lease, writes the task's new state
with its events, releases or cancels its dependents and, when nothing is left, ends the
workflow or starts its rollback. Every such transaction sends `NOTIFY` on
`CHANNEL_TASKS`, which wakes the workers (with a retry, its payload says when it is
due), and one that ends a workflow `CHANNEL_ENDED` with its id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.ids import new_id
from orchestrator.rules import (
    ACTIVE_WORKFLOW,
    CANCELLED_BY_REQUEST,
    DoneTask,
    EndedTask,
    Outcome,
    RetryPolicy,
    TaskStatus,
    after_attempt,
    compensation_rows,
    dependency_reason,
    stop_reason,
    stops_workflow,
    workflow_end,
)
from orchestrator.specs import TaskDefaults
from orchestrator.store.claims import (
    CHANNEL_CANCEL,
    CHANNEL_ENDED,
    CHANNEL_TASKS,
    CLAIM_LOCK,
    event_row,
    notify_in,
)
from orchestrator.store.journal import ResourceRecord, write_events, write_resource
from orchestrator.store.models import Task, TaskDependency, Workflow
from orchestrator.store.taskstore import JSON, AttemptEnd, EndReport

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox


class _Changes:
    """Events collected during one transaction, written together at its end."""

    def __init__(self) -> None:
        self.now = utcnow()
        self.events: list[dict[str, Any]] = []
        #: Pending tasks cancelled on the way (dependents, the rest of a stopped workflow).
        self.cancelled = 0

    def event(
        self, type_: str, data: JSON, workflow_id: str | None, task_id: str | None = None
    ) -> None:
        self.events.append(event_row(type_, data, workflow_id, task_id, self.now))


async def end_attempt(
    engine: AsyncEngine,
    end: AttemptEnd,
    defaults: TaskDefaults,
    outbox: Outbox | None,
) -> EndReport | None:
    """Record how an attempt ended; None if the task's lease is no longer its owner's."""
    claim = end.claim
    async with engine.begin() as connection:
        workflow = await _lock_workflow(connection, claim.workflow_id)
        if workflow is None:
            return None
        changes = _Changes()
        if end.outcome == Outcome.COMPLETED:
            report = await _complete(connection, changes, workflow, end, defaults)
            if report is None:
                return None
            await connection.run_sync(write_events, changes.events, outbox)
            return report
        query = select(Task.__table__).where(
            Task.id == claim.task_id, Task.status == "Running", Task.lease_owner == claim.owner
        )
        if end.expired_only:
            query = query.where(Task.lease_expires_at < func.now())
        task = (await connection.execute(query.with_for_update())).mappings().first()
        if task is None:
            return None
        report = EndReport()
        if workflow["status"] == "Pending":
            await _move_workflow(connection, changes, report, workflow, "Running", None)
        if end.interrupted:
            changes.event(
                "TaskInterrupted",
                {"task_id": task["id"], "attempt": task["attempts"], "error": end.error},
                workflow["id"],
                task["id"],
            )
        await _record_end(connection, changes, report, workflow, dict(task), end, defaults)
        await _finish_if_done(connection, changes, report, workflow, defaults)
        await connection.run_sync(write_events, changes.events, outbox)
        # A retry says when it is due, so that idle workers wake for it then.
        due = None
        if report.retry_delay is not None:
            due = (changes.now + timedelta(seconds=report.retry_delay)).timestamp()
        await notify_in(connection, CHANNEL_TASKS, "" if due is None else f"{due:.3f}")
        report.cancelled = changes.cancelled
        return report


async def request_cancel(
    engine: AsyncEngine, workflow_id: str, defaults: TaskDefaults, outbox: Outbox | None
) -> EndReport | None:
    """Cancel a workflow: pending tasks end at once, workers stop the running ones.

    None if the workflow has already ended (or does not exist)."""
    async with engine.begin() as connection:
        # Claims lock task rows, then a Pending workflow's row; this locks the workflow
        # row, then its pending tasks: taking the claims' lock first keeps the two apart.
        await connection.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK)))
        workflow = await _lock_workflow(connection, workflow_id)
        if workflow is None or workflow["status"] not in ACTIVE_WORKFLOW:
            return None
        await connection.execute(
            update(Workflow).where(Workflow.id == workflow_id).values(cancel_requested=True)
        )
        workflow["cancel_requested"] = True
        changes = _Changes()
        pending = (
            await connection.execute(
                select(Task.id, Task.name)
                .where(Task.workflow_id == workflow_id, Task.status == "Pending")
                .order_by(Task.position)
                .with_for_update()
            )
        ).all()
        cancelled: set[str] = set()
        for task_id, name in pending:
            if task_id in cancelled:
                continue
            if not await _set_ended(
                connection, changes, workflow_id, task_id, name, CANCELLED_BY_REQUEST
            ):
                continue
            cancelled.add(task_id)
            reason = dependency_reason(name, "Cancelled")
            cancelled.update(await _cascade(connection, changes, workflow_id, [task_id], reason))
        report = EndReport(status=TaskStatus.CANCELLED)
        await _finish_if_done(connection, changes, report, workflow, defaults)
        await connection.run_sync(write_events, changes.events, outbox)
        await notify_in(connection)
        await notify_in(connection, CHANNEL_CANCEL, workflow_id)
        report.cancelled = changes.cancelled
        report.running = [
            row[0]
            for row in await connection.execute(
                select(Task.id).where(Task.workflow_id == workflow_id, Task.status == "Running")
            )
        ]
        return report


async def _complete(
    connection: AsyncConnection,
    changes: _Changes,
    workflow: dict[str, Any],
    end: AttemptEnd,
    defaults: TaskDefaults,
) -> EndReport | None:
    """The common end, in as few round trips as it can: one statement marks the task
    `Completed` (if the lease is still its owner's), releases its dependents, tells
    whether anything else of the workflow is left and notifies the workers."""
    claim = end.claim
    guard = [Task.id == claim.task_id, Task.status == "Running", Task.lease_owner == claim.owner]
    if end.expired_only:
        guard.append(Task.lease_expires_at < func.now())
    done = (
        update(Task)
        .where(*guard)
        .values(
            status="Completed",
            output=end.output,
            result=end.result,
            error=None,
            progress=100.0,
            completed_at=changes.now,
            lease_owner=None,
            lease_expires_at=None,
            handle=None,
        )
        .returning(Task.id, Task.name, Task.operation_id, Task.provider, Task.workflow_id)
        .cte("done")
    )
    counts = (
        select(TaskDependency.task_id, func.count().label("n"))
        .join(done, TaskDependency.depends_on == done.c.id)
        .group_by(TaskDependency.task_id)
        .subquery()
    )
    released = (
        update(Task)
        .where(Task.id == counts.c.task_id)
        .values(pending_dependencies=Task.pending_dependencies - counts.c.n)
        .returning(Task.id)
        .cte("released")
    )
    others = (
        select(Task.id)
        .where(
            Task.workflow_id == done.c.workflow_id,
            Task.status.in_(("Pending", "Running")),
            Task.id != done.c.id,
        )
        .exists()
    )
    statement = select(
        done.c.id,
        done.c.name,
        done.c.operation_id,
        done.c.provider,
        others.label("unfinished"),
        func.pg_notify(CHANNEL_TASKS, ""),
    ).add_cte(released)
    row = (await connection.execute(statement)).mappings().first()
    if row is None:
        return None
    report = EndReport(status=TaskStatus.COMPLETED)
    if workflow["status"] == "Pending":  # its start was not recorded (a recovery)
        await _move_workflow(connection, changes, report, workflow, "Running", None)
    if end.interrupted:
        changes.event(
            "TaskRecovered",
            {"task_id": row["id"], "worker": claim.owner, "output": end.output},
            workflow["id"],
            row["id"],
        )
    data: JSON = {"task_id": row["id"], "name": row["name"], "status": "Completed"}
    if row["operation_id"] is not None:
        data["operation_id"] = row["operation_id"]
    changes.event("TaskStatusChanged", data, workflow["id"], row["id"])
    if not workflow["check_mode"]:
        for change in end.resources:
            await connection.run_sync(
                write_resource, ResourceRecord(row["provider"], workflow["id"], row["id"], change)
            )
            changes.event(
                "ResourceChanged",
                change.event(row["provider"], row["id"]),
                workflow["id"],
                row["id"],
            )
    if not row["unfinished"]:
        await _finish_if_done(connection, changes, report, workflow, defaults)
    return report


_WORKFLOW_STATE = (
    Workflow.id,
    Workflow.kind,
    Workflow.status,
    Workflow.error,
    Workflow.check_mode,
    Workflow.rollback_enabled,
    Workflow.cancel_requested,
)


async def _lock_workflow(connection: AsyncConnection, workflow_id: str) -> dict[str, Any] | None:
    row = (
        (
            await connection.execute(
                select(*_WORKFLOW_STATE).where(Workflow.id == workflow_id).with_for_update()
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


async def _record_end(
    connection: AsyncConnection,
    changes: _Changes,
    report: EndReport,
    workflow: dict[str, Any],
    task: dict[str, Any],
    end: AttemptEnd,
    defaults: TaskDefaults,
) -> None:
    """An attempt that did not complete: handed back, retried, or the task's end (then
    its dependents are cancelled or released, and the workflow may stop), as
    `rules.after_attempt` decides."""
    workflow_id = workflow["id"]
    base = {"lease_owner": None, "lease_expires_at": None, "handle": None}
    decision = after_attempt(
        end.outcome,
        error=end.error,
        retryable=end.retryable,
        attempt=task["attempts"],
        policy=RetryPolicy(
            task["max_attempts"],
            task["retry_initial_delay"],
            task["retry_max_delay"],
            defaults.jitter,
        ),
        cancel_requested=bool(workflow["cancel_requested"]),
        stopped_by=None if task["compensates"] else await _stopper(connection, workflow_id),
    )
    report.status = decision.status
    if decision.status == TaskStatus.PENDING:
        data: JSON = {
            "task_id": task["id"],
            "name": task["name"],
            "status": "Pending",
            "attempt": task["attempts"],
            "error": decision.error,
        }
        values: dict[str, Any]
        if decision.released:
            values = {"attempts": Task.attempts - 1, "not_before": None}
            data["released"] = True
        else:
            delay = decision.retry_delay or 0.0
            report.retry_delay = delay
            values = {"not_before": changes.now + timedelta(seconds=delay)}
            data.update(retrying=True, max_attempts=task["max_attempts"], delay=round(delay, 3))
        await connection.execute(
            update(Task)
            .where(Task.id == task["id"])
            .values(status="Pending", error=decision.error, **values, **base)
        )
        changes.event("TaskStatusChanged", data, workflow_id, task["id"])
        return
    status, error = decision.status, decision.error or "failed"
    await connection.execute(
        update(Task)
        .where(Task.id == task["id"])
        .values(status=str(status), error=error, completed_at=changes.now, **base)
    )
    data = {"task_id": task["id"], "name": task["name"], "status": str(status), "error": error}
    if task["operation_id"] is not None:
        data["operation_id"] = task["operation_id"]
    changes.event("TaskStatusChanged", data, workflow_id, task["id"])
    ended = [task["id"]]
    ended += await _cascade(
        connection, changes, workflow_id, [task["id"]], dependency_reason(task["name"], status)
    )
    await _release(connection, ended, soft_only=True)
    if stops_workflow(status, task["on_failure"], task["compensates"]):
        pending = (
            await connection.execute(
                select(Task.id, Task.name).where(
                    Task.workflow_id == workflow_id,
                    Task.status == "Pending",
                    Task.compensates.is_(None),
                )
            )
        ).all()
        for task_id, name in pending:
            await _set_ended(
                connection, changes, workflow_id, task_id, name, stop_reason(task["name"])
            )


async def _stopper(connection: AsyncConnection, workflow_id: str) -> str | None:
    """The name of a task whose failure stopped the workflow, if one did."""
    return (
        await connection.execute(
            select(Task.name)
            .where(
                Task.workflow_id == workflow_id,
                Task.status == "Failed",
                Task.on_failure.in_(("fail", "rollback")),
                Task.compensates.is_(None),
            )
            .order_by(Task.completed_at)
            .limit(1)
        )
    ).scalar_one_or_none()


async def _set_ended(
    connection: AsyncConnection,
    changes: _Changes,
    workflow_id: str,
    task_id: str,
    name: str,
    error: str,
) -> bool:
    """A pending task cancelled before it ran; False if it is no longer pending (a
    claim running concurrently started it first)."""
    updated = await connection.execute(
        update(Task)
        .where(Task.id == task_id, Task.status == "Pending")
        .values(status="Cancelled", error=error, completed_at=changes.now)
        .returning(Task.id)
    )
    if updated.first() is None:
        return False
    changes.cancelled += 1
    changes.event(
        "TaskStatusChanged",
        {"task_id": task_id, "name": name, "status": "Cancelled", "error": error},
        workflow_id,
        task_id,
    )
    return True


async def _cascade(
    connection: AsyncConnection,
    changes: _Changes,
    workflow_id: str,
    ended: list[str],
    error: str,
) -> list[str]:
    """Cancel every pending task below `ended` through hard edges; return their ids."""
    cancelled: list[str] = []
    frontier = ended
    while frontier:
        rows = (
            await connection.execute(
                select(Task.id, Task.name)
                .join(TaskDependency, TaskDependency.task_id == Task.id)
                .where(
                    TaskDependency.depends_on.in_(frontier),
                    TaskDependency.kind == "hard",
                    Task.status == "Pending",
                )
                .distinct()
            )
        ).all()
        frontier = []
        for task_id, name in rows:
            if await _set_ended(connection, changes, workflow_id, task_id, name, error):
                frontier.append(task_id)
        cancelled += frontier
    return cancelled


async def _release(connection: AsyncConnection, ended: list[str], *, soft_only: bool) -> None:
    """Decrement the counters of the dependents of `ended` (the claim filters on them),
    once per edge: a dependent of two ended tasks loses two."""
    if not ended:
        return
    edges = select(TaskDependency.task_id, func.count().label("n")).where(
        TaskDependency.depends_on.in_(ended)
    )
    if soft_only:
        edges = edges.where(TaskDependency.kind == "soft")
    counts = edges.group_by(TaskDependency.task_id).subquery()
    await connection.execute(
        update(Task)
        .where(Task.id == counts.c.task_id)
        .values(pending_dependencies=Task.pending_dependencies - counts.c.n)
    )


async def _finish_if_done(
    connection: AsyncConnection,
    changes: _Changes,
    report: EndReport,
    workflow: dict[str, Any],
    defaults: TaskDefaults,
) -> None:
    workflow_id = workflow["id"]
    unfinished = await connection.execute(
        select(Task.id)
        .where(Task.workflow_id == workflow_id, Task.status.in_(("Pending", "Running")))
        .limit(1)
    )
    if unfinished.first() is not None:
        return
    tasks = [
        dict(row)
        for row in (
            await connection.execute(
                select(Task.__table__)
                .where(Task.workflow_id == workflow_id)
                .order_by(Task.position)
            )
        ).mappings()
    ]
    end = workflow_end(
        workflow["status"],
        (
            EndedTask(t["name"], t["status"], t["error"], t["on_failure"], t["compensates"])
            for t in tasks
        ),
        cancel_requested=bool(workflow["cancel_requested"]),
        rollback_enabled=bool(workflow["rollback_enabled"]),
        check_mode=bool(workflow["check_mode"]),
        cause=workflow["error"],
    )
    if end.rollback and await _start_rollback(
        connection, changes, report, workflow, tasks, end.error or "", defaults
    ):
        return
    await _move_workflow(connection, changes, report, workflow, end.status, end.error)


async def _move_workflow(
    connection: AsyncConnection,
    changes: _Changes,
    report: EndReport,
    workflow: dict[str, Any],
    status: str,
    error: str | None,
) -> None:
    values: dict[str, Any] = {"status": status}
    if status == "Running":
        values["started_at"] = changes.now
    else:
        values["error"] = error
    if status in ("Completed", "Failed", "Cancelled", "RolledBack"):
        values["completed_at"] = changes.now
        await notify_in(connection, CHANNEL_ENDED, workflow["id"])
    await connection.execute(update(Workflow).where(Workflow.id == workflow["id"]).values(values))
    data: JSON = {"workflow_id": workflow["id"], "status": status, "kind": workflow["kind"]}
    if error:
        data["error"] = error
    changes.event("WorkflowStatusChanged", data, workflow["id"])
    if workflow["kind"] == "batch" and status != "Running" and status != "RollingBack":
        changes.event("BatchStatusChanged", {**data, "batch_id": workflow["id"]}, workflow["id"])
    workflow["status"] = status


async def _start_rollback(
    connection: AsyncConnection,
    changes: _Changes,
    report: EndReport,
    workflow: dict[str, Any],
    tasks: list[dict[str, Any]],
    cause: str,
    defaults: TaskDefaults,
) -> bool:
    workflow_id = workflow["id"]
    completed = [t for t in tasks if t["status"] == "Completed" and t["compensates"] is None]
    if not completed:
        return False
    edges = (
        await connection.execute(
            select(TaskDependency.task_id, TaskDependency.depends_on).where(
                TaskDependency.task_id.in_([t["id"] for t in completed])
            )
        )
    ).all()
    depends: dict[str, list[str]] = {t["id"]: [] for t in completed}
    for task_id, depends_on in edges:
        depends[task_id].append(depends_on)
    done = [
        DoneTask(
            id=t["id"],
            name=t["name"],
            provider=t["provider"],
            action=t["action"],
            params=t["params"],
            output=t["output"],
            result=t["result"],
            dependencies=tuple(depends[t["id"]]),
            operation_id=t["operation_id"],
        )
        for t in sorted(completed, key=lambda t: t["position"])
    ]
    rows, new_edges = compensation_rows(done, workflow_id, len(tasks), defaults, new_id)
    await connection.execute(insert(Task), rows)
    if new_edges:
        await connection.execute(
            insert(TaskDependency),
            [{"task_id": t, "depends_on": d, "kind": k} for t, d, k in new_edges],
        )
    workflow["error"] = cause
    await connection.execute(
        update(Workflow).where(Workflow.id == workflow_id).values(status="RollingBack", error=cause)
    )
    report.rollback_started = True
    workflow["status"] = "RollingBack"
    changes.event(
        "WorkflowStatusChanged",
        {
            "workflow_id": workflow_id,
            "status": "RollingBack",
            "kind": workflow["kind"],
            "error": cause,
        },
        workflow_id,
    )
    changes.event(
        "RollbackStarted", {"workflow_id": workflow_id, "compensations": len(rows)}, workflow_id
    )
    return True
