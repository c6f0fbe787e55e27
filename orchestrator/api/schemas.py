"""Request and response types of the orchestrator API (seed 003 shapes).

Pure types: msgspec and the shared field rules, no Litestar and no store, so the client
(`orchestrator.client`) decodes the answers with these very structs. The mapping from
stored rows to them lives with the controllers that answer with them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from orchestrator.errors import InvalidInput
from orchestrator.fields import NO_CONTROL, Id, Identifier, Name, ParallelLimit, Text
from orchestrator.plan import Plan
from orchestrator.rules import TERMINAL, WORKFLOW_TERMINAL
from orchestrator.specs import TaskSpec

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
    #: "task", or "workflow" when `GET /tasks/{id}` was given a workflow id.
    kind: str = "task"
    #: Those of `dependencies` that are soft: the task runs once they ended, however.
    soft_dependencies: list[str] = []


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

    @property
    def total_tasks(self) -> int:
        return sum(self.task_counts.values())

    @property
    def finished_tasks(self) -> int:
        return sum(n for s, n in self.task_counts.items() if s in TERMINAL)

    @property
    def is_final(self) -> bool:
        """True once the workflow never changes again."""
        return self.status in WORKFLOW_TERMINAL


class EventOut(msgspec.Struct):
    """One event of the log, as the stream sends it (`/ws`)."""

    seq: int
    event_type: str
    timestamp: datetime
    data: dict[str, Any]
    workflow_id: str | None
    task_id: str | None


# -- batches --------------------------------------------------------------------------------


class Compensation(msgspec.Struct):
    """The task that undid (or is undoing) a batch task's work."""

    task_id: str
    status: str
    error: str | None


class OperationResult(msgspec.Struct):
    """What one of an operation's tasks did, keyed by its subject (`server web-01`)."""

    task_id: str
    status: str
    output: str | None
    error: str | None
    result: dict[str, Any] | None
    compensation: Compensation | None


class BatchOperationOut(msgspec.Struct, omit_defaults=True):
    id: str
    status: str
    progress: float
    #: Only in `GET /batch/operations/{id}`.
    results: dict[str, OperationResult] | None = None


class BatchOut(msgspec.Struct):
    batch_id: str
    status: str
    operations: list[BatchOperationOut]
    name: str | None = None
    created_at: datetime | None = None
    error: str | None = None
    check_mode: bool = False
    rollback_enabled: bool = False
    #: What the submission accepted but did differently (a `storage_backend` that is not
    #: the server's store); empty otherwise, and in the listings.
    warnings: list[str] = msgspec.field(default_factory=list)

    @property
    def is_final(self) -> bool:
        """True once the batch never changes again."""
        return self.status in WORKFLOW_TERMINAL

    @property
    def finished_operations(self) -> int:
        return sum(1 for op in self.operations if op.status not in ("Pending", "Running"))


# -- checkpoints and rollback -------------------------------------------------------------


class CheckpointIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Text = ""


class CheckpointOut(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    description: str
    created_at: datetime
    size: str
    seq: int
    #: Completed, not yet undone tasks since the checkpoint: what a rollback would undo
    #: (in its detail only).
    operations_count: int | None = None
    #: Inventory rows the checkpoint recorded: what a restore would put back (in its
    #: detail only).
    resources: int | None = None
    #: The compensation tasks a rollback to it would run now, in their order (the first
    #: `UNDO_SHOWN`; in its detail only).
    undo: list[str] | None = None
    #: Why a rollback to it cannot run now (another rollback holds some of that work, or
    #: a workflow doing it still runs), if so (in its detail only).
    undo_blocked: str | None = None


#: How many compensation tasks a checkpoint's detail names.
UNDO_SHOWN = 100


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of `checkpoint_id` and `operation_ids` (the schema says so too)."""

    checkpoint_id: Id | None = None
    operation_ids: Annotated[list[Identifier], msgspec.Meta(min_length=1)] | None = None
    wait: bool = True


#: How the published schema states "exactly one of", which `execute` enforces.
EXACTLY_ONE = {
    "oneOf": [
        {
            "required": ["checkpoint_id"],
            "properties": {"checkpoint_id": {"type": "string"}, "operation_ids": {"type": "null"}},
        },
        {
            "required": ["operation_ids"],
            "properties": {"operation_ids": {"type": "array"}, "checkpoint_id": {"type": "null"}},
        },
    ]
}


RollbackBody = Annotated[RollbackIn, msgspec.Meta(extra_json_schema=EXACTLY_ONE)]


class RollbackOut(msgspec.Struct):
    #: The rollback run's workflow id (`GET /workflows/{id}`), also when there was
    #: nothing to undo (a run without tasks).
    rollback_id: str
    #: None while the rollback still runs.
    success: bool | None
    operations_executed: int
    operations_failed: int
    duration: float
    status: str


class RollbackStatistics(msgspec.Struct):
    total_checkpoints: int
    total_rollbacks: int
    success_rate: float | None
    average_rollback_time: float | None


# -- state ----------------------------------------------------------------------------------


class Progress(msgspec.Struct):
    workflow_id: str
    status: str
    progress: float
    current_step: str | None
    total_steps: int
    completed_steps: int
    estimated_time_remaining: float | None


class Snapshot(msgspec.Struct):
    snapshot_id: str
    timestamp: datetime
    state: str
    details: dict[str, Any]


class SystemLoad(msgspec.Struct):
    cpu_usage: float
    #: MB in use.
    memory_usage: float
    memory_percent: float
    disk_usage: float


class SystemMetrics(msgspec.Struct):
    total_workflows: int
    active_workflows: int
    completed_workflows: int
    failed_workflows: int
    running_tasks: int
    queued_tasks: int
    system_load: SystemLoad


class Health(msgspec.Struct):
    overall_status: str
    components: dict[str, str]
    providers: dict[str, str]
    last_check: datetime
    details: dict[str, str]


class Statistics(msgspec.Struct):
    total_workflows: int
    active_snapshots: int
    storage_usage: str
    storage_bytes: int
    average_workflow_duration: float | None
    workflows_by_status: dict[str, int]
    #: Rows kept per kind (events, workflows, tasks, webhook deliveries): what
    #: retention prunes.
    rows: dict[str, int]


# -- providers and the inventory ----------------------------------------------------------


class ProviderOperationOut(msgspec.Struct):
    name: str
    #: How a task spells it (`POST /workflows`, `GET /tasks`).
    action: str
    #: True: it runs as a task of a workflow; False: it only reads, answered at once.
    mutates: bool
    #: The operation undoing it; None: irreversible (or, for a read, nothing to undo).
    undo: str | None
    summary: str
    #: The JSON Schema of its params.
    params: dict[str, Any]


class KindOut(msgspec.Struct):
    name: str
    #: Policies name its items `<plural>:<name>`.
    plural: str
    #: The param naming an item (its inventory row and policy name); None: unnamed.
    key: str | None
    operations: list[ProviderOperationOut]


class ProviderOut(msgspec.Struct):
    name: str
    type: str
    #: Running a task on it also needs `run` on `<type>:<instance>`.
    touches_host: bool
    #: False for a type that declares nothing: free-form actions and params.
    declared: bool
    kinds: list[KindOut]


class ApplyIn(msgspec.Struct, forbid_unknown_fields=True):
    """One operation: its params (as the operation's schema says), in check mode or not,
    waiting (up to `server.wait_timeout`) for its workflow to end or not."""

    params: dict[str, Any] = {}
    check_mode: bool = False
    wait: bool = False


class DestroyIn(msgspec.Struct, forbid_unknown_fields=True):
    """What to delete: every recorded resource an infra declares (`infra`), or the
    named ones (`names`), narrowed by `kind` and `provider`."""

    infra: Identifier | None = None
    settings: str | None = None
    names: list[Name] | None = None
    kind: Identifier | None = None
    provider: Identifier | None = None
    #: Only the plan: nothing is submitted.
    check_mode: bool = False
    wait: bool = False


class DestroyOut(msgspec.Struct):
    """The plan of a deletion and, unless `check_mode`, the workflow undoing it (None
    when nothing could be deleted). Entries marked `skipped` are the resources that
    cannot be deleted this way, with why (`note`)."""

    workflow_id: str | None
    plan: Plan


class ResourceOut(msgspec.Struct):
    id: str
    #: The provider instance that recorded it.
    provider: str
    kind: str
    name: str
    status: str
    #: How policies name it (`servers:web-01`); None when the instance's type does not
    #: declare the kind (or is no longer configured).
    resource: str | None
    #: The user it belongs to: the one its record names (a VM's, a deployment's), else
    #: the one whose workflow last changed it; None for work of the system itself.
    owner: str | None
    workflow_id: str | None
    task_id: str | None
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime
