"""How tasks and workflows end: pure rules shared by both executors.

The in-memory executor (embedded SQLite, one process) and the database-claimed worker
(PostgreSQL, several processes) apply the same rules: the retry delay, the reasons
recorded for cancelled tasks, and what a workflow ends as once none of its tasks is left.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

TERMINAL = frozenset({"Completed", "Failed", "Cancelled"})
WORKFLOW_TERMINAL = TERMINAL | {"RolledBack"}
#: The statuses in which a workflow still has work to run.
ACTIVE_WORKFLOW = ("Pending", "Running", "RollingBack")

CANCELLED_BY_REQUEST = "cancelled: the workflow was cancelled"


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """Delay before attempt `attempt + 1`: exponential from `initial`, capped, jittered."""
    base = min(maximum, initial * (2 ** max(0, attempt - 1)))
    return float(max(0.0, base * (1 + random.uniform(-jitter, jitter))))


def dependency_reason(name: str, status: str) -> str:
    """Why a dependent of the task `name`, which ended `status`, was cancelled."""
    verb = "failed" if status == "Failed" else "was cancelled"
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
    return status == "Failed" and on_failure in ("fail", "rollback") and compensates is None


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
    status: str
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
    if status == "RollingBack":
        failed = [t for t in tasks if t.compensates is not None and t.status != "Completed"]
        cause = cause or "a failure"
        if not failed:
            return WorkflowEnd("RolledBack", f"rolled back after: {cause}")
        details = "; ".join(f"{t.name}: {t.error}" for t in failed[:10])
        return WorkflowEnd("Failed", f"{cause}; rollback incomplete: {details}")
    if cancel_requested:
        return WorkflowEnd("Cancelled", "cancelled by request")
    failed = [t for t in tasks if t.status == "Failed"]
    if not failed and not any(t.status == "Cancelled" for t in tasks):
        return WorkflowEnd("Completed", None)
    error = "; ".join(f"{t.name}: {t.error}" for t in failed[:5]) or "tasks were cancelled"
    wants_rollback = rollback_enabled or any(t.on_failure == "rollback" for t in failed)
    return WorkflowEnd("Failed", error, rollback=wants_rollback and not check_mode)
