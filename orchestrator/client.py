"""A small typed client of the orchestrator's HTTP API, as the CLI uses it.

Every call unwraps the response envelope: it returns the `data` of a success and raises
`ApiError` (the envelope's message and code) for an error, or when the answer is not
the documented shape. A server that cannot be reached raises `Unreachable`. Bodies are
decoded into the structs below, so a field the API drops or retypes fails loudly here
rather than somewhere in a table.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from orchestrator.client_vms import VmsSection

T = TypeVar("T")

#: Statuses after which a workflow never changes again.
FINAL_WORKFLOW_STATUSES = frozenset({"Completed", "Failed", "Cancelled", "RolledBack"})
#: Statuses after which a task never changes again.
FINAL_TASK_STATUSES = frozenset({"Completed", "Failed", "Cancelled"})
#: Statuses after which a batch never changes again.
FINAL_BATCH_STATUSES = frozenset({"Completed", "Failed", "Cancelled", "RolledBack"})
#: The most rows one page may hold (the API's maximum `limit`).
MAX_PAGE = 1000
#: How long `rollback` waits for its answer: the server holds it up to its
#: `server.wait_timeout` (300 s by default) and then answers with the rollback running.
ROLLBACK_TIMEOUT = 330.0


class Event(msgspec.Struct, kw_only=True):
    """One event of a workflow's log (`GET /workflows/{id}/events`)."""

    seq: int
    event_type: str
    timestamp: datetime
    data: dict[str, Any]
    task_id: str | None = None


class Task(msgspec.Struct, kw_only=True):
    """A task as `GET /tasks` answers it (seed 003 fields first)."""

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
    provider: str
    action: str
    attempts: int
    max_attempts: int
    progress: float
    operation_id: str | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    timeout: float | None = None
    result: dict[str, Any] | None = None
    compensates: str | None = None
    #: "task", or "workflow" when `GET /tasks/{id}` was given a workflow id.
    kind: str = "task"


class Workflow(msgspec.Struct, kw_only=True):
    """A workflow as `GET /workflows/{id}` answers it."""

    id: str
    kind: str
    name: str
    status: str
    parallel_limit: int
    check_mode: bool
    error: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    task_counts: dict[str, int]
    progress: float
    rollback_enabled: bool = False
    owner: str | None = None

    @property
    def total_tasks(self) -> int:
        return sum(self.task_counts.values())

    @property
    def finished_tasks(self) -> int:
        return sum(n for s, n in self.task_counts.items() if s in FINAL_TASK_STATUSES)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_WORKFLOW_STATUSES


class Compensation(msgspec.Struct, kw_only=True):
    """The task that undid (or is undoing) a batch task's work."""

    task_id: str
    status: str
    error: str | None


class OperationResult(msgspec.Struct, kw_only=True):
    """What one of an operation's tasks did, keyed by its subject (`server web-01`)."""

    task_id: str
    status: str
    output: str | None
    error: str | None
    result: dict[str, Any] | None
    compensation: Compensation | None


class BatchOperation(msgspec.Struct, kw_only=True):
    """One operation of a batch; `results` only in `GET /batch/operations/{id}`."""

    id: str
    status: str
    progress: float
    results: dict[str, OperationResult] | None = None


class Batch(msgspec.Struct, kw_only=True):
    """A batch as `POST /batch/execute` and `GET /batch/operations[/{id}]` answer it."""

    batch_id: str
    status: str
    operations: list[BatchOperation]
    name: str | None = None
    created_at: datetime | None = None
    error: str | None = None

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_BATCH_STATUSES

    @property
    def finished_operations(self) -> int:
        return sum(1 for op in self.operations if op.status not in ("Pending", "Running"))


class Checkpoint(msgspec.Struct, kw_only=True):
    """A checkpoint; `operations_count` and `resources` only in its detail."""

    id: str
    name: str
    description: str
    created_at: datetime
    size: str
    seq: int
    #: Completed, not yet undone tasks since the checkpoint: what a rollback would undo.
    operations_count: int | None = None
    #: Inventory rows the checkpoint recorded: what a restore would put back.
    resources: int | None = None


class RollbackResult(msgspec.Struct, kw_only=True):
    """`POST /rollback/execute`: `rollback_id` is None when there was nothing to undo,
    `success` None while the rollback still runs."""

    rollback_id: str | None
    success: bool | None
    operations_executed: int
    operations_failed: int
    duration: float
    status: str


class RollbackStatistics(msgspec.Struct, kw_only=True):
    total_checkpoints: int
    total_rollbacks: int
    success_rate: float | None
    average_rollback_time: float | None


class WorkflowProgress(msgspec.Struct, kw_only=True):
    """`GET /state/workflows/{id}/progress`."""

    workflow_id: str
    status: str
    progress: float
    current_step: str | None
    total_steps: int
    completed_steps: int
    estimated_time_remaining: float | None


class SystemLoad(msgspec.Struct, kw_only=True):
    cpu_usage: float
    #: MB in use.
    memory_usage: float
    memory_percent: float
    disk_usage: float


class SystemMetrics(msgspec.Struct, kw_only=True):
    total_workflows: int
    active_workflows: int
    completed_workflows: int
    failed_workflows: int
    running_tasks: int
    queued_tasks: int
    system_load: SystemLoad


class SystemHealth(msgspec.Struct, kw_only=True):
    overall_status: str
    components: dict[str, str]
    providers: dict[str, str]
    last_check: datetime
    details: dict[str, str]


class StateStatistics(msgspec.Struct, kw_only=True):
    total_workflows: int
    active_snapshots: int
    storage_usage: str
    storage_bytes: int
    average_workflow_duration: float | None
    workflows_by_status: dict[str, int]


class Resource(msgspec.Struct, kw_only=True):
    """An inventory row as `GET /resources` answers it."""

    id: str
    provider: str
    kind: str
    name: str
    status: str
    #: How policies name it (`servers:web-01`), when its kind is declared.
    resource: str | None
    workflow_id: str | None
    task_id: str | None
    data: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class ProviderOperation(msgspec.Struct, kw_only=True):
    name: str
    action: str
    mutates: bool
    undo: str | None
    summary: str
    params: dict[str, Any]


class ProviderKind(msgspec.Struct, kw_only=True):
    name: str
    plural: str
    key: str | None
    operations: list[ProviderOperation]


class ProviderInstance(msgspec.Struct, kw_only=True):
    """A provider instance as `GET /providers` answers it."""

    name: str
    type: str
    touches_host: bool
    declared: bool
    kinds: list[ProviderKind]


class Applied(msgspec.Struct, kw_only=True):
    """`POST /providers/{instance}/{kind}/{operation}`: the workflow doing a mutating
    operation, or the result of a read-only one."""

    workflow_id: str | None = None
    result: dict[str, Any] | None = None


class Page(msgspec.Struct, Generic[T]):
    """One page of a list, with the paging headers the API sent."""

    items: list[T]
    total: int
    limit: int
    offset: int
    #: The absolute `Link: rel="next"` URL; None on the last page.
    next: str | None


class ApiError(Exception):
    """The orchestrator answered with an error envelope, or with something unexpected."""

    def __init__(self, message: str, code: str, status: int, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details


class Unreachable(Exception):
    """No orchestrator answers at the base URL (refused, unresolvable, timed out)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class OrchestratorClient:
    """Calls the orchestrator at `base_url`; `token` is sent as `Authorization: Bearer`.

    Use as a context manager, or call `close()`. `transport` is for tests.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def vms(self) -> VmsSection:
        """Seed 001's VM calls: `client.vms.list()`, `.create({...})`, `.start(id)`, …"""
        return VmsSection(self)

    # -- health ---------------------------------------------------------------------------

    def health(self) -> str:
        return self._call("GET", "/health", str)[0]

    # -- tasks ----------------------------------------------------------------------------

    def list_tasks(
        self,
        *,
        status: str | None = None,
        workflow_id: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Task]:
        query = {"status": status, "workflow_id": workflow_id, "limit": limit, "offset": offset}
        return self._page("/tasks", query, list[Task])

    def all_tasks(self, *, workflow_id: str | None = None, status: str | None = None) -> list[Task]:
        """Every matching task, following the `Link: rel="next"` pages."""
        query = {"status": status, "workflow_id": workflow_id, "limit": MAX_PAGE}
        page = self._page("/tasks", query, list[Task])
        tasks = list(page.items)
        while page.next is not None:
            page = self._page(page.next, {}, list[Task])
            tasks.extend(page.items)
        return tasks

    def get_task(self, task_id: str) -> Task:
        """A task; given a workflow id, the workflow in task shape (`kind == "workflow"`)."""
        return self._call("GET", f"/tasks/{_segment(task_id)}", Task)[0]

    # -- workflows ------------------------------------------------------------------------

    def create_servers(
        self, infra: str, *, settings: str | None = None, check_mode: bool = False
    ) -> str:
        """Submit a servers workflow; return its id (it runs on after this returns)."""
        body = {"infra": infra, "settings": settings, "check_mode": check_mode, "wait": False}
        return self._call("POST", "/workflows/servers/create", str, json=body)[0]

    def create_taskserv(
        self,
        taskserv: str,
        infra: str,
        *,
        operation: str = "create",
        settings: str | None = None,
        check_mode: bool = False,
    ) -> str:
        body = {
            "operation": operation,
            "taskserv": taskserv,
            "infra": infra,
            "settings": settings,
            "check_mode": check_mode,
            "wait": False,
        }
        return self._call("POST", "/workflows/taskserv/create", str, json=body)[0]

    def create_cluster(
        self,
        cluster_type: str,
        infra: str,
        *,
        operation: str = "create",
        settings: str | None = None,
        check_mode: bool = False,
    ) -> str:
        body = {
            "operation": operation,
            "cluster_type": cluster_type,
            "infra": infra,
            "settings": settings,
            "check_mode": check_mode,
            "wait": False,
        }
        return self._call("POST", "/workflows/cluster/create", str, json=body)[0]

    def list_workflows(
        self,
        *,
        status: str | None = None,
        kind: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Workflow]:
        query = {"status": status, "kind": kind, "limit": limit, "offset": offset}
        return self._page("/workflows", query, list[Workflow])

    def get_workflow(self, workflow_id: str) -> Workflow:
        return self._call("GET", f"/workflows/{_segment(workflow_id)}", Workflow)[0]

    def workflow_events(self, workflow_id: str, after: int = 0) -> list[Event]:
        """The workflow's events past seq `after`, oldest first, every page."""
        found: list[Event] = []
        while True:
            page, _ = self._call(
                "GET",
                f"/workflows/{_segment(workflow_id)}/events",
                list[Event],
                params={"after": after, "limit": MAX_PAGE},
            )
            found += page
            if len(page) < MAX_PAGE:
                return found
            after = page[-1].seq

    def cancel_workflow(self, workflow_id: str) -> str:
        """Ask the orchestrator to cancel; return its message (also when already ended)."""
        return self._call("POST", f"/workflows/{_segment(workflow_id)}/cancel", str)[0]

    # -- batches --------------------------------------------------------------------------

    def submit_batch(self, document: bytes, content_type: str = "application/yaml") -> Batch:
        """Submit a batch document (YAML or JSON); return it as accepted (it runs on)."""
        headers = {"Content-Type": content_type}
        return self._call("POST", "/batch/execute", Batch, content=document, headers=headers)[0]

    def list_batches(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page[Batch]:
        query = {"status": status, "limit": limit, "offset": offset}
        return self._page("/batch/operations", query, list[Batch])

    def get_batch(self, batch_id: str) -> Batch:
        """A batch with every operation's `results`."""
        return self._call("GET", f"/batch/operations/{_segment(batch_id)}", Batch)[0]

    def cancel_batch(self, batch_id: str) -> str:
        """Ask the orchestrator to cancel; return its message (also when already ended)."""
        return self._call("POST", f"/batch/operations/{_segment(batch_id)}/cancel", str)[0]

    # -- checkpoints and rollback ---------------------------------------------------------

    def create_checkpoint(self, name: str, description: str = "") -> str:
        body = {"name": name, "description": description}
        return self._call("POST", "/rollback/checkpoints", str, json=body)[0]

    def list_checkpoints(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> Page[Checkpoint]:
        query = {"limit": limit, "offset": offset}
        return self._page("/rollback/checkpoints", query, list[Checkpoint])

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return self._call("GET", f"/rollback/checkpoints/{_segment(checkpoint_id)}", Checkpoint)[0]

    def rollback(
        self,
        *,
        checkpoint_id: str | None = None,
        operation_ids: list[str] | None = None,
        timeout: float = ROLLBACK_TIMEOUT,
    ) -> RollbackResult:
        """Undo the work done since a checkpoint, or the named operations (`op` or
        `batch_id:op`); give exactly one. The server answers once the rollback ends or
        its wait timeout passes (then `success` is None)."""
        body: dict[str, Any] = {}
        if checkpoint_id is not None:
            body["checkpoint_id"] = checkpoint_id
        if operation_ids is not None:
            body["operation_ids"] = operation_ids
        answer = self._call("POST", "/rollback/execute", RollbackResult, json=body, timeout=timeout)
        return answer[0]

    def restore(self, checkpoint_id: str) -> str:
        """Reset the recorded inventory to the checkpoint's; return the server's message."""
        return self._call("POST", f"/rollback/restore/{_segment(checkpoint_id)}", str)[0]

    def rollback_statistics(self) -> RollbackStatistics:
        return self._call("GET", "/rollback/statistics", RollbackStatistics)[0]

    # -- providers and the inventory -------------------------------------------------------

    def list_providers(self) -> list[ProviderInstance]:
        return self._call("GET", "/providers", list[ProviderInstance])[0]

    def apply(
        self,
        instance: str,
        kind: str,
        operation: str,
        params: dict[str, Any],
        *,
        check_mode: bool = False,
    ) -> Applied:
        """Do one operation: a mutating one is submitted (it runs on after this returns)."""
        path = "/".join(_segment(part) for part in ("", "providers", instance, kind, operation))
        body = {"params": params, "check_mode": check_mode, "wait": False}
        answer: Any = str | dict[str, Any]
        data = self._call("POST", path, answer, json=body)[0]
        if isinstance(data, str):
            return Applied(workflow_id=data)
        return Applied(result=data)

    def list_resources(
        self,
        *,
        kind: str | None = None,
        provider: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page[Resource]:
        query = {"kind": kind, "provider": provider, "limit": limit, "offset": offset}
        return self._page("/resources", query, list[Resource])

    def get_resource(self, resource_id: str) -> Resource:
        return self._call("GET", f"/resources/{_segment(resource_id)}", Resource)[0]

    # -- state ----------------------------------------------------------------------------

    def workflow_progress(self, workflow_id: str) -> WorkflowProgress:
        path = f"/state/workflows/{_segment(workflow_id)}/progress"
        return self._call("GET", path, WorkflowProgress)[0]

    def system_health(self) -> SystemHealth:
        return self._call("GET", "/state/system/health", SystemHealth)[0]

    def system_metrics(self) -> SystemMetrics:
        return self._call("GET", "/state/system/metrics", SystemMetrics)[0]

    def state_statistics(self) -> StateStatistics:
        return self._call("GET", "/state/statistics", StateStatistics)[0]

    # -- plumbing -------------------------------------------------------------------------

    def _page(self, path: str, query: dict[str, Any], items_type: type[list[T]]) -> Page[T]:
        items, response = self._call("GET", path, items_type, params=query)
        headers = response.headers
        try:
            total = int(headers["X-Total-Count"])
            limit = int(headers["X-Limit"])
            offset = int(headers["X-Offset"])
        except (KeyError, ValueError) as exc:
            raise self._unexpected(response, f"missing or invalid paging header {exc}") from None
        link = response.links.get("next", {}).get("url")
        # A link is relative to the URL it came with (RFC 8288), not to the base URL.
        following = str(response.url.join(link)) if link else None
        return Page(items=items, total=total, limit=limit, offset=offset, next=following)

    def _call(
        self,
        method: str,
        path: str,
        data_type: type[T],
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> tuple[T, httpx.Response]:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        waited = self._http.timeout.read if timeout is None else timeout
        try:
            response = self._http.request(
                method,
                path,
                params=query or None,
                json=json,
                content=content,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(
                f"{method} {path}: no answer within {waited} s",
                "TIMEOUT",
                0,
            ) from exc
        except httpx.TransportError as exc:
            raise Unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        try:
            envelope = msgspec.json.decode(response.content, type=_Envelope)
        except msgspec.DecodeError as exc:
            raise self._unexpected(response, f"not an envelope ({exc})") from None
        if not response.is_success:
            if envelope.success or envelope.error is None:
                raise self._unexpected(response, "not an error envelope")
            raise ApiError(
                envelope.error, envelope.code or "UNKNOWN", response.status_code, envelope.details
            )
        if not envelope.success or not envelope.data:
            raise self._unexpected(response, "a success answer without `success` and `data`")
        try:
            return msgspec.json.decode(envelope.data, type=data_type), response
        except msgspec.DecodeError as exc:
            raise self._unexpected(response, f"`data` is not the documented shape: {exc}") from None

    @staticmethod
    def _unexpected(response: httpx.Response, why: str) -> ApiError:
        request = response.request
        return ApiError(
            f"unexpected answer to {request.method} {request.url}: HTTP {response.status_code}, "
            f"{why}",
            "UNEXPECTED_RESPONSE",
            response.status_code,
        )


class _Envelope(msgspec.Struct):
    """Either envelope; `data` is decoded once its type is known."""

    success: bool
    #: Empty when the body has no `data`.
    data: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    error: str | None = None
    code: str | None = None
    details: Any = None


def _segment(value: str) -> str:
    """An id as one path segment: a `/` or `?` in it must not change the route."""
    return quote(value, safe="")
