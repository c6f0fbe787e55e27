"""The storage surface of the one scheduler (`orchestrator/scheduler.py`): a `TaskStore`.

Three implementations: `MemoryTaskStore` (the graph in memory: the scheduler's and the
rules' tests run on it in seconds), `SqliteTaskStore` (the same graph, every transition
persisted through the journal and the attempt log: the embedded default) and
`PostgresTaskStore` (claims and leases in the shared database: several workers). Each
applies the decisions of `orchestrator/rules.py`; none makes its own. One contract test
suite (`tests/store/`) runs on all three.

The life of an attempt, as the scheduler drives it:

    interrupted = await store.open()        # attempts a crash left running here
    ... each recovered, then ended (AttemptEnd(interrupted=True)) ...
    await store.recovered()
    claims = await store.claim(8)           # Running, under every limit, with events
    await store.before_call(claim)          # what the call must wait for (a commit)
    await store.record_handle(claim, {...}) # durable before the work may start
    report = await store.end(AttemptEnd(claim, Outcome.COMPLETED, output=...))

The scheduler records the ends of its attempts in batches, each with its next claim
(`settle`: a group commit; on PostgreSQL, one round trip for the common case):

    settlement = await store.settle([end, ...], 8)  # reports, then new claims
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from orchestrator.rules import Outcome, TaskStatus

JSON = dict[str, Any]


class IdentityInUse(Exception):
    """Another live process uses this worker's identity (host and data directory)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How many tasks may run at once: in all, per provider instance (unless it has a
    limit of its own); each workflow has its own `parallel_limit`."""

    global_limit: int
    provider_limit: int
    provider_limits: Mapping[str, int] = field(default_factory=dict)

    def of_provider(self, provider: str) -> int:
        return self.provider_limits.get(provider, self.provider_limit)


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    """A workflow to store: its row, its task rows and its edges (task, depends on,
    hard | soft), as the service built them from a `WorkflowSpec`."""

    workflow: JSON
    tasks: Sequence[JSON]
    edges: Sequence[tuple[str, str, str]]


@dataclass(frozen=True, slots=True)
class Claim:
    """One attempt of one task, claimed for a worker: what its provider call needs."""

    task_id: str
    name: str
    workflow_id: str
    provider: str
    action: str
    params: JSON
    #: The attempt's number (1 for the first).
    attempt: int
    timeout: float | None
    check_mode: bool
    compensates: str | None
    compensation: JSON | None
    #: The worker holding the task (its lease, on PostgreSQL).
    owner: str
    #: What the provider gave to stop this attempt (known for interrupted attempts).
    handle: JSON | None = None
    #: When the task became ready (`time.monotonic()`), where the store knows it.
    ready_at: float | None = None
    #: The embedded store's journal batch that must be committed before the call.
    barrier: int = 0


@dataclass(frozen=True, slots=True)
class ResourceWrite:
    """An inventory row a task created, changed or removed (`op` delete)."""

    kind: str
    name: str
    op: Literal["create", "update", "delete"]
    status: str = "active"
    data: JSON = field(default_factory=dict)

    def event(self, provider: str, task_id: str) -> JSON:
        """The `ResourceChanged` event's data (`resource.created` and so on in webhooks):
        what changed, not the record (it may hold what only its owner may read)."""
        return {
            "provider": provider,
            "kind": self.kind,
            "name": self.name,
            "op": self.op,
            "status": "deleted" if self.op == "delete" else self.status,
            "task_id": task_id,
        }


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended, as the scheduler saw it."""

    claim: Claim
    outcome: Outcome
    error: str | None = None
    retryable: bool = True
    output: str | None = None
    result: JSON | None = None
    resources: Sequence[ResourceWrite] = ()
    #: Recorded by someone other than the attempt's runner, after a crash: a
    #: `TaskInterrupted` event comes first (`TaskRecovered` for one that completed).
    interrupted: bool = False
    #: Only if the lease has expired (recovering another worker's attempt).
    expired_only: bool = False


@dataclass(slots=True)
class EndReport:
    """What recording an end (or a cancel) did, for the scheduler's metrics."""

    status: TaskStatus | None = None
    retry_delay: float | None = None
    #: Pending tasks it cancelled besides (dependents of a failure, a cancel's).
    cancelled: int = 0
    rollback_started: bool = False
    #: Tasks of a cancelled workflow still running (a cancel's report).
    running: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Settlement:
    """What `TaskStore.settle` did."""

    #: One per end given, in order: what recording it did; None when it was not this
    #: worker's to record (its lease was lost) or could not be recorded now.
    reports: list[EndReport | None]
    claims: list[Claim]
    #: The positions of the ends that could not be recorded now (the database did not
    #: answer): to be given again later.
    unrecorded: set[int] = field(default_factory=set)


class Inventory(Protocol):
    """A read-only view of the resources one provider instance has recorded."""

    async def get(self, kind: str, name: str) -> JSON | None: ...

    async def list(self, kind: str) -> list[JSON]: ...


class TaskStore(Protocol):
    """What the scheduler needs of a store. See the module's docstring."""

    worker_id: str
    #: Whether claims carry leases that must be renewed (`heartbeat`) and may expire.
    leases: bool

    @property
    def healthy(self) -> bool: ...

    @property
    def commits(self) -> int: ...

    @property
    def queued(self) -> int:
        """Tasks ready to run (and waiting for a place)."""

    @property
    def running_anywhere(self) -> int:
        """Tasks running in every worker (for a process that runs none itself)."""

    def inventory(self, provider: str) -> Inventory:
        """What the provider instance's calls see of the resources it recorded."""

    async def open(self) -> list[Claim]: ...

    async def recovered(self) -> None: ...

    async def close(self) -> None: ...

    async def submit(self, workflow: NewWorkflow) -> None: ...

    async def claim(self, limit: int) -> list[Claim]: ...

    async def before_call(self, claim: Claim) -> None: ...

    async def record_handle(self, claim: Claim, handle: JSON) -> None: ...

    async def end(self, end: AttemptEnd) -> EndReport | None: ...

    async def settle(self, ends: Sequence[AttemptEnd], limit: int) -> Settlement:
        """Record these ends, each as `end` would, then claim up to `limit` ready tasks
        (fewer only when no more may run now): the scheduler's group commit."""

    async def cancel(self, workflow_id: str) -> EndReport | None: ...

    async def heartbeat(self, task_ids: Sequence[str]) -> set[str]:
        """Renew the leases of these running tasks; return those still this worker's."""

    async def cancel_requested(self, workflow_ids: Sequence[str]) -> set[str]:
        """Those of these workflows whose cancel was requested (by another process)."""

    async def expired(self) -> list[Claim]: ...

    async def wait_for_work(self, patience: float) -> None: ...

    async def wait_ended(self, workflow_id: str) -> None: ...


#: Called after a commit that wrote events (stream readers and webhooks wake).
OnCommit = Callable[[], None]
#: Called with workflows another process cancelled (their running tasks here stop).
OnCancel = Callable[[set[str]], None]
