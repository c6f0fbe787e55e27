"""What a workflow is before it is stored: its task specs, and the defaults that fill in
what a spec leaves out. Plain values, importable from every layer (the store plans a
rollback's compensations with them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.clock import utcnow


@dataclass(slots=True)
class TaskSpec:
    name: str
    provider: str
    action: str
    params: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    command: str = ""
    args: list[str] = field(default_factory=list)
    max_attempts: int | None = None
    retry_initial_delay: float | None = None
    retry_max_delay: float | None = None
    timeout: float | None = None
    operation_id: str | None = None
    #: Tasks that must have ended, in any state, before this one starts.
    soft_dependencies: list[str] = field(default_factory=list)
    #: fail | continue | rollback (see docs/concepts.md)
    on_failure: str = "continue"
    compensates: str | None = None
    compensation: dict[str, Any] | None = None
    #: Where the request gave the task's params (`operations[1].commands[0]`), for
    #: messages about them; `tasks[<index>].params` when empty.
    origin: str = ""


@dataclass(slots=True)
class WorkflowSpec:
    kind: str
    name: str
    tasks: list[TaskSpec]
    parallel_limit: int | None = None
    rollback_enabled: bool = False
    check_mode: bool = False
    request: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskDefaults:
    """The configured retry policy and timeout, for specs that give none."""

    max_attempts: int = 3
    retry_initial_delay: float = 5.0
    retry_max_delay: float = 300.0
    #: Seconds; None: no timeout.
    timeout: float | None = 3600.0
    #: ± fraction of each retry delay.
    jitter: float = 0.1


def task_row(
    task: TaskSpec, task_id: str, workflow_id: str, position: int, defaults: TaskDefaults
) -> dict[str, Any]:
    """The stored row of a new task, with the defaults filled in."""
    return {
        "id": task_id,
        "workflow_id": workflow_id,
        "operation_id": task.operation_id,
        "position": position,
        "name": task.name,
        "command": task.command or f"{task.provider} {task.action}",
        "args": task.args,
        "provider": task.provider,
        "action": task.action,
        "params": task.params,
        "status": "Pending",
        "pending_dependencies": len(task.dependencies) + len(task.soft_dependencies),
        "attempts": 0,
        "max_attempts": task.max_attempts or defaults.max_attempts,
        "retry_initial_delay": (
            task.retry_initial_delay
            if task.retry_initial_delay is not None
            else defaults.retry_initial_delay
        ),
        "retry_max_delay": (
            task.retry_max_delay if task.retry_max_delay is not None else defaults.retry_max_delay
        ),
        "timeout": (task.timeout if task.timeout is not None else defaults.timeout) or None,
        "progress": 0.0,
        "output": None,
        "error": None,
        "result": None,
        "on_failure": task.on_failure,
        "compensates": task.compensates,
        "compensation": task.compensation,
        "not_before": None,
        "lease_owner": None,
        "lease_expires_at": None,
        "handle": None,
        "created_at": utcnow(),
        "started_at": None,
        "completed_at": None,
    }
