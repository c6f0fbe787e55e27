"""Request and response types of the orchestrator API (seed 003 shapes), and the one
mapping from stored rows to them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from orchestrator.api.redaction import redact, redact_args, redact_text
from orchestrator.errors import InvalidInput
from orchestrator.fields import NO_CONTROL, Name, ParallelLimit
from orchestrator.specs import TaskSpec
from orchestrator.store.events import LoggedEvent

#: An infra or a settings file: one name inside the workspace, the rule of
#: `orchestrator.workspace.NAME`.
WORKSPACE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
WorkspaceName = Annotated[str, msgspec.Meta(max_length=128, pattern=WORKSPACE_NAME)]
#: A provider instance or an action: the store keeps 64 characters of them.
ShortName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_CONTROL)]
InfraOperation = Literal["create", "delete"]


class ServersCreate(msgspec.Struct, forbid_unknown_fields=True):
    infra: WorkspaceName
    settings: WorkspaceName | None = None
    check_mode: bool = False
    wait: bool = False


class TaskservCreate(msgspec.Struct, forbid_unknown_fields=True):
    taskserv: Name
    infra: WorkspaceName
    operation: InfraOperation = "create"
    settings: WorkspaceName | None = None
    check_mode: bool = False
    wait: bool = False


class ClusterCreate(msgspec.Struct, forbid_unknown_fields=True):
    cluster_type: Name
    infra: WorkspaceName
    operation: InfraOperation = "create"
    settings: WorkspaceName | None = None
    check_mode: bool = False
    wait: bool = False


class TaskIn(msgspec.Struct, forbid_unknown_fields=True):
    """One task of a workflow submitted as an explicit graph."""

    name: Name
    provider: ShortName
    action: ShortName
    params: dict[str, Any] = {}
    dependencies: list[Name] = []
    max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None
    retry_initial_delay: Annotated[float, msgspec.Meta(ge=0, le=86_400)] | None = None
    retry_max_delay: Annotated[float, msgspec.Meta(ge=0, le=86_400)] | None = None
    timeout: Annotated[float, msgspec.Meta(gt=0, le=7 * 86_400)] | None = None

    def to_spec(self) -> TaskSpec:
        command = str(self.params.get("command", f"{self.provider} {self.action}"))
        if "\x00" in command:  # the store cannot keep it
            raise InvalidInput(f"{self.name}: params.command holds a NUL character")
        args = self.params.get("args", [])
        return TaskSpec(
            name=self.name,
            provider=self.provider,
            action=self.action,
            params=self.params,
            dependencies=self.dependencies,
            command=command,
            args=[str(a) for a in args] if isinstance(args, list) else [],
            max_attempts=self.max_attempts,
            retry_initial_delay=self.retry_initial_delay,
            retry_max_delay=self.retry_max_delay,
            timeout=self.timeout,
        )


class WorkflowIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    #: At most `server.max_tasks_per_workflow` (the published schema says how many).
    tasks: Annotated[list[TaskIn], msgspec.Meta(min_length=1)]
    parallel_limit: ParallelLimit | None = None
    check_mode: bool = False
    wait: bool = False


class TaskOut(msgspec.Struct):
    id: str
    name: str
    command: str
    args: list[str]
    dependencies: list[str]
    status: str
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    output: str | None
    error: str | None
    workflow_id: str
    operation_id: str | None
    provider: str
    action: str
    params: dict[str, Any]
    attempts: int
    max_attempts: int
    timeout: float | None
    progress: float
    result: dict[str, Any] | None
    compensates: str | None
    kind: str = "task"


class WorkflowOut(msgspec.Struct):
    id: str
    kind: str
    name: str
    status: str
    parallel_limit: int
    rollback_enabled: bool
    check_mode: bool
    owner: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    task_counts: dict[str, int]
    progress: float


def task_out(row: dict[str, Any]) -> TaskOut:
    return TaskOut(
        id=row["id"],
        name=row["name"],
        command=redact_text(row["command"]),
        args=redact_args(list(row["args"] or [])),
        dependencies=list(row.get("dependencies", [])),
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output=row["output"],
        error=row["error"],
        workflow_id=row["workflow_id"],
        operation_id=row["operation_id"],
        provider=row["provider"],
        action=row["action"],
        params=redact(row["params"] or {}),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        progress=row["progress"],
        result=row["result"],
        compensates=row["compensates"],
    )


def workflow_progress(counts: dict[str, int]) -> float:
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s in ("Completed", "Failed", "Cancelled"))
    return round(100.0 * done / total, 1) if total else 100.0


def workflow_out(row: dict[str, Any]) -> WorkflowOut:
    counts = row.get("task_counts", {})
    return WorkflowOut(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        parallel_limit=row["parallel_limit"],
        rollback_enabled=row["rollback_enabled"],
        check_mode=row["check_mode"],
        owner=row["owner"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        task_counts=counts,
        progress=workflow_progress(counts),
    )


def workflow_as_task(row: dict[str, Any]) -> TaskOut:
    """A workflow in the seed's task shape, so `GET /tasks/{id}` answers for the id that
    `POST /workflows/*/create` returned."""
    spec = row["spec"] or {}
    counts = row.get("task_counts", {})
    completed = counts.get("Completed", 0)
    total = sum(counts.values())
    args = [
        f"--{k}={v}"
        for k, v in spec.items()
        if k in ("infra", "settings", "taskserv", "cluster_type")
    ]
    output = None
    if row["status"] == "Completed":
        output = f"Successfully ran {completed} of {total} tasks"
    return TaskOut(
        id=row["id"],
        name=row["name"],
        command=f"provisioning workflow {row['kind']}",
        args=args,
        dependencies=[],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output=output,
        error=row["error"],
        workflow_id=row["id"],
        operation_id=None,
        provider="",
        action=row["kind"],
        params=redact(spec),
        attempts=1 if row["started_at"] else 0,
        max_attempts=1,
        timeout=None,
        progress=workflow_progress(counts),
        result={"task_counts": counts},
        compensates=None,
        kind="workflow",
    )


class EventOut(msgspec.Struct):
    """One event of the log, as the stream sends it (`/ws`)."""

    seq: int
    event_type: str
    timestamp: datetime
    data: dict[str, Any]
    workflow_id: str | None
    task_id: str | None


def event_out(event: LoggedEvent) -> EventOut:
    return EventOut(
        seq=event.seq,
        event_type=event.type,
        timestamp=event.at,
        data=event.data,
        workflow_id=event.workflow_id,
        task_id=event.task_id,
    )
