"""The rules of a task's and a workflow's life, written once: pure functions over typed
values, no I/O. Every store applies their decisions (in memory, through the embedded
database's journal, or in PostgreSQL statements); none decides anything itself.

- An attempt ends `completed`, `failed` (retryable or not), `cancelled` (the workflow's
  cancel) or `released` (handed back by a worker that is stopping: not counted).
  `after_attempt` says what the task becomes: Completed, Pending again after a backoff
  (a retry), Pending at once (released), Failed or Cancelled.
- A task that ends Failed or Cancelled cancels its pending dependents through hard
  edges (`dependency_reason` names it) and releases its soft dependents; one whose
  `on_failure` is fail or rollback also stops the rest of its workflow (`stops_workflow`:
  pending tasks are cancelled with `stop_reason`, compensations excepted).
- Once none of its tasks is left, `workflow_end` says what the workflow ends as, and
  whether its completed work is to be compensated first (a rollback).
- A rollback is a workflow of compensation tasks, one per completed task
  (`plan_compensations`), run dependents first: if B depended on A, "undo B" comes
  before "undo A". The order between compensations is a soft dependency, so one
  compensation failing (an irreversible action, say) neither hides nor blocks the
  others; every failure is reported.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from orchestrator.specs import TaskDefaults, TaskSpec, task_row


class TaskStatus(StrEnum):
    """The seed's words, exactly."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


class WorkflowStatus(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"


class Outcome(StrEnum):
    """How one attempt ended, as the scheduler saw it."""

    COMPLETED = "completed"
    FAILED = "failed"
    #: Stopped because its workflow was cancelled.
    CANCELLED = "cancelled"
    #: Handed back by a stopping worker: pending again at once, the attempt not counted.
    RELEASED = "released"


TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
WORKFLOW_TERMINAL = frozenset(
    {
        WorkflowStatus.COMPLETED,
        WorkflowStatus.FAILED,
        WorkflowStatus.CANCELLED,
        WorkflowStatus.ROLLED_BACK,
    }
)
#: The statuses in which a workflow still has work to run.
ACTIVE_WORKFLOW = (WorkflowStatus.PENDING, WorkflowStatus.RUNNING, WorkflowStatus.ROLLING_BACK)

CANCELLED_BY_REQUEST = "cancelled: the workflow was cancelled"


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """Delay before attempt `attempt + 1`: exponential from `initial`, capped, jittered."""
    base = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return float(max(0.0, base * (1 + random.uniform(-jitter, jitter))))


def dependency_reason(name: str, status: str) -> str:
    """Why a dependent of the task `name`, which ended `status`, was cancelled."""
    verb = "failed" if status == TaskStatus.FAILED else "was cancelled"
    return f"cancelled: dependency '{name}' {verb}"


def stop_reason(failed_name: str) -> str:
    """Why pending work stopped after a task with on_failure fail/rollback failed."""
    return f"cancelled: the workflow stopped after '{failed_name}' failed"


def interrupted_reason(attempt: int, who: str = "the orchestrator") -> str:
    return f"interrupted: {who} stopped while attempt {attempt} was running"


def timeout_reason(timeout: float | None) -> str:
    return f"timed out after {timeout or 0:g}s"


def stops_workflow(status: str, on_failure: str, compensates: str | None) -> bool:
    """A task whose final failure stops the rest of its workflow."""
    return (
        status == TaskStatus.FAILED and on_failure in ("fail", "rollback") and compensates is None
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    initial_delay: float
    max_delay: float
    jitter: float


@dataclass(frozen=True, slots=True)
class TaskDecision:
    """What a task becomes after an attempt."""

    status: TaskStatus
    error: str | None = None
    #: Pending again after this many seconds (a retry).
    retry_delay: float | None = None
    #: Pending again at once, the attempt not counted.
    released: bool = False


def after_attempt(
    outcome: Outcome,
    *,
    error: str | None,
    retryable: bool,
    attempt: int,
    policy: RetryPolicy,
    cancel_requested: bool,
    stopped_by: str | None,
) -> TaskDecision:
    """What a task becomes once attempt number `attempt` ended with `outcome`.

    `stopped_by` names the task whose failure stopped the workflow, if one did (never
    set for a compensation, which runs whatever stopped its workflow).
    """
    if outcome == Outcome.COMPLETED:
        return TaskDecision(TaskStatus.COMPLETED)
    if outcome == Outcome.RELEASED and not cancel_requested and stopped_by is None:
        return TaskDecision(TaskStatus.PENDING, error, released=True)
    retry = retryable and attempt < policy.max_attempts
    if cancel_requested or outcome == Outcome.CANCELLED:
        return TaskDecision(TaskStatus.CANCELLED, CANCELLED_BY_REQUEST)
    if (retry or outcome == Outcome.RELEASED) and stopped_by is not None:
        return TaskDecision(TaskStatus.CANCELLED, stop_reason(stopped_by))
    if retry:
        delay = backoff_delay(attempt, policy.initial_delay, policy.max_delay, policy.jitter)
        return TaskDecision(TaskStatus.PENDING, error or "failed", retry_delay=delay)
    return TaskDecision(TaskStatus.FAILED, error or "failed")


@dataclass(frozen=True, slots=True)
class EndedTask:
    """A task of a workflow with nothing left to run, as the end decision needs it."""

    name: str
    status: str
    error: str | None
    on_failure: str
    compensates: str | None


@dataclass(frozen=True, slots=True)
class WorkflowEnd:
    status: WorkflowStatus
    error: str | None
    #: Undo the completed work first (the workflow goes RollingBack if there is any).
    rollback: bool = False


def workflow_end(
    status: str,
    tasks: Iterable[EndedTask],
    *,
    cancel_requested: bool,
    rollback_enabled: bool,
    check_mode: bool,
    cause: str | None,
) -> WorkflowEnd:
    """What a workflow in `status` ends as, all of its `tasks` being terminal."""
    tasks = list(tasks)
    if status == WorkflowStatus.ROLLING_BACK:
        failed = [t for t in tasks if t.compensates is not None and t.status != "Completed"]
        cause = cause or "a failure"
        if not failed:
            return WorkflowEnd(WorkflowStatus.ROLLED_BACK, f"rolled back after: {cause}")
        details = "; ".join(f"{t.name}: {t.error}" for t in failed[:10])
        return WorkflowEnd(WorkflowStatus.FAILED, f"{cause}; rollback incomplete: {details}")
    if cancel_requested:
        return WorkflowEnd(WorkflowStatus.CANCELLED, "cancelled by request")
    failed = [t for t in tasks if t.status == TaskStatus.FAILED]
    if not failed and not any(t.status == TaskStatus.CANCELLED for t in tasks):
        return WorkflowEnd(WorkflowStatus.COMPLETED, None)
    error = "; ".join(f"{t.name}: {t.error}" for t in failed[:5]) or "tasks were cancelled"
    wants_rollback = rollback_enabled or any(t.on_failure == "rollback" for t in failed)
    return WorkflowEnd(WorkflowStatus.FAILED, error, rollback=wants_rollback and not check_mode)


# Rollback planning: which completed tasks to undo, in which order.


@dataclass(frozen=True, slots=True)
class DoneTask:
    """A completed task as rollback planning needs it."""

    id: str
    name: str
    provider: str
    action: str
    params: dict[str, Any]
    output: str | None
    result: dict[str, Any] | None
    #: ids of the tasks it depended on
    dependencies: tuple[str, ...]
    operation_id: str | None = None
    #: groups tasks whose compensations must all end before an earlier group's start
    #: (a later workflow's work is undone before an earlier one's).
    group: int = 0


#: The longest task name the store keeps (`tasks.name`).
MAX_NAME = 200


def _with_id(task: DoneTask) -> str:
    suffix = f" [{task.id}]"
    return f"undo {task.name[: MAX_NAME - len('undo ') - len(suffix)]}{suffix}"


def compensation_names(done: Sequence[DoneTask]) -> dict[str, str]:
    """A name for each compensation, unique by construction and short enough to store.

    `undo <name>` where that is unique and fits (names are unique within one workflow,
    so an automatic rollback reads naturally); otherwise `undo <name> [<task id>]`,
    which ids make unique. Should a plain name still equal another's (a task named
    after another task's id), every name carries its id.
    """
    plain = {t.id: f"undo {t.name}" for t in done}
    counts = Counter(plain.values())
    names = {
        t.id: plain[t.id]
        if counts[plain[t.id]] == 1 and len(plain[t.id]) <= MAX_NAME
        else _with_id(t)
        for t in done
    }
    if len(set(names.values())) < len(names):
        names = {t.id: _with_id(t) for t in done}
    return names


def plan_compensations(done: Sequence[DoneTask]) -> list[TaskSpec]:
    """Compensation specs for `done`, ordered dependents first.

    Within a group the original edges are reversed; across groups, every compensation
    of a group waits for all compensations of the next group (and so of every later one).
    """
    by_id = {t.id: t for t in done}
    names = compensation_names(done)
    dependents: dict[str, list[str]] = {t.id: [] for t in done}
    for task in done:
        for dep in task.dependencies:
            if dep in by_id and by_id[dep].group == task.group:
                dependents[dep].append(task.id)
    groups = sorted({t.group for t in done})
    following = dict(itertools.pairwise(groups))
    later: dict[int, list[str]] = {
        g: [names[t.id] for t in done if t.group == following.get(g)] for g in groups
    }
    specs = []
    for task in done:
        after = [names[d] for d in dependents[task.id]] + later[task.group]
        specs.append(
            TaskSpec(
                name=names[task.id],
                provider=task.provider,
                action=task.action,
                params=task.params,
                soft_dependencies=after,
                command=f"{task.provider} compensate {task.action}",
                args=[task.name],
                operation_id=task.operation_id,
                compensates=task.id,
                compensation={"output": task.output, "result": task.result or {}},
            )
        )
    return specs


def compensation_rows(
    done: Sequence[DoneTask],
    workflow_id: str,
    first_position: int,
    defaults: TaskDefaults,
    new_id: Callable[[], str],
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The task rows and (task, depends on, kind) edges undoing `done`."""
    specs = plan_compensations(done)
    ids = {spec.name: new_id() for spec in specs}
    rows = [
        task_row(spec, ids[spec.name], workflow_id, first_position + i, defaults)
        for i, spec in enumerate(specs)
    ]
    edges = [(ids[spec.name], ids[d], "soft") for spec in specs for d in spec.soft_dependencies]
    return rows, edges
