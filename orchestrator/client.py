"""A small typed client of the orchestrator's HTTP API, as the CLI uses it, and the
plumbing it shares with the control center's client (`ApiClient`).

Every call unwraps the response envelope: it returns the `data` of a success and raises
`ApiError` (the envelope's message and code) for an error, or when the answer is not
the documented shape. A server that cannot be reached raises `Unreachable`. Requests
and answers are the API's own types (`orchestrator.api.schemas`, the envelope of
`orchestrator.http.envelope`), named here as the CLI names them; so a field the API
drops or retypes fails loudly here rather than somewhere in a table. Importing this
module loads no server: those modules are pure msgspec types.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar, cast
from urllib.parse import quote

import msgspec

from orchestrator.api.schemas import (
    ApplyIn,
    CheckpointIn,
    ClusterCreate,
    DestroyIn,
    DestroyOut,
    InfraOperation,
    OperationResult,
    RollbackIn,
    RollbackStatistics,
    ServersCreate,
    SystemMetrics,
    TaskservCreate,
)
from orchestrator.api.schemas import BatchOperationOut as BatchOperation
from orchestrator.api.schemas import BatchOut as Batch
from orchestrator.api.schemas import CheckpointOut as Checkpoint
from orchestrator.api.schemas import EventOut as Event
from orchestrator.api.schemas import Health as SystemHealth
from orchestrator.api.schemas import Progress as WorkflowProgress
from orchestrator.api.schemas import ProviderOut as ProviderInstance
from orchestrator.api.schemas import ResourceOut as Resource
from orchestrator.api.schemas import RollbackOut as RollbackResult
from orchestrator.api.schemas import Statistics as StateStatistics
from orchestrator.api.schemas import TaskOut as Task
from orchestrator.api.schemas import WorkflowOut as Workflow
from orchestrator.client_vms import VmsSection
from orchestrator.http.envelope import Envelope, ErrorBody
from orchestrator.plan import Plan

if TYPE_CHECKING:
    import httpx

__all__ = [
    "MAX_PAGE",
    "ROLLBACK_TIMEOUT",
    "ApiClient",
    "ApiError",
    "Applied",
    "Batch",
    "BatchOperation",
    "Checkpoint",
    "DestroyIn",
    "DestroyOut",
    "Event",
    "OperationResult",
    "OrchestratorClient",
    "Page",
    "Plan",
    "ProviderInstance",
    "Resource",
    "RollbackResult",
    "RollbackStatistics",
    "StateStatistics",
    "SystemHealth",
    "SystemMetrics",
    "Task",
    "Unreachable",
    "Workflow",
    "WorkflowProgress",
]

T = TypeVar("T")

#: The most rows one page may hold (the API's maximum `limit`).
MAX_PAGE = 1000
#: The length of a whole id (a UUID); anything shorter is a short id to resolve.
ID_LENGTH = 36
#: How many candidates an ambiguous short id's error names.
SHOWN_CANDIDATES = 10
#: How long `rollback` waits for its answer: the server holds it up to its
#: `server.wait_timeout` (300 s by default) and then answers with the rollback running.
ROLLBACK_TIMEOUT = 330.0


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
    """The API answered with an error envelope, or with something unexpected."""

    def __init__(
        self, message: str, code: str, status: int, details: Any = None, *, anonymous: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.details = details
        #: The request carried no credential (so a 401 means "log in", not "renew").
        self.anonymous = anonymous


class Unreachable(Exception):
    """Nothing answers at the base URL (refused, unresolvable, timed out)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url = url
        self.reason = reason


class ApiClient:
    """Either app's API at `base_url`: the envelope, the paging headers and the transport
    errors; `token` is sent as `Authorization: Bearer`. Subclasses add the endpoints.

    Use as a context manager, or call `close()`. `transport` is for tests.
    """

    #: What a base URL nothing answers at raises.
    unreachable: type[Unreachable] = Unreachable

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
        # Imported here: httpx (and the rich it imports) was half of `provisioning --help`.
        import httpx

        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
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

    def _page(self, path: str, query: dict[str, Any], items_type: type[list[T]]) -> Page[T]:
        items, response = self._exchange("GET", path, items_type, params=query)
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

    def _call(self, method: str, path: str, data_type: type[T], **request: Any) -> T:
        return self._exchange(method, path, data_type, **request)[0]

    def _exchange(
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
        """Send one request (`json`: a request struct or plain data); the answer's `data`
        as `data_type`, and the response."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if json is not None:
            content = msgspec.json.encode(json)
            headers = {**(headers or {}), "Content-Type": "application/json"}
        waited = self._http.timeout.read if timeout is None else timeout
        import httpx  # loaded by __init__ already

        try:
            response = self._http.request(
                method,
                path,
                params=query or None,
                content=content,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self.unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        except httpx.TimeoutException as exc:
            raise ApiError(f"{method} {path}: no answer within {waited} s", "TIMEOUT", 0) from exc
        except httpx.TransportError as exc:
            raise self.unreachable(self.base_url, str(exc) or type(exc).__name__) from exc
        if not response.is_success:
            try:
                error = msgspec.json.decode(response.content, type=ErrorBody)
            except msgspec.DecodeError:
                raise self._unexpected(response, "not an error envelope") from None
            anonymous = "Authorization" not in self._http.headers
            raise ApiError(
                error.error, error.code, response.status_code, error.details, anonymous=anonymous
            )
        try:
            envelope = msgspec.json.decode(response.content, type=Envelope[msgspec.Raw])
        except msgspec.DecodeError as exc:
            raise self._unexpected(response, f"not an envelope ({exc})") from None
        if not envelope.success:
            raise self._unexpected(response, "a success answer without `success`")
        try:
            return msgspec.json.decode(envelope.data, type=data_type), response
        except msgspec.DecodeError as exc:
            raise self._unexpected(response, f"`data` is not the documented shape: {exc}") from None

    def _every(self, path: str, query: dict[str, Any], items_type: type[list[T]]) -> list[T]:
        """Every row of a list, following the `Link: rel="next"` pages."""
        page = self._page(path, {**query, "limit": MAX_PAGE}, items_type)
        rows = list(page.items)
        while page.next is not None:
            page = self._page(page.next, {}, items_type)
            rows.extend(page.items)
        return rows

    @staticmethod
    def _unexpected(response: httpx.Response, why: str) -> ApiError:
        request = response.request
        return ApiError(
            f"unexpected answer to {request.method} {request.url}: HTTP {response.status_code}, "
            f"{why}",
            "UNEXPECTED_RESPONSE",
            response.status_code,
        )


class OrchestratorClient(ApiClient):
    """Calls the orchestrator at `base_url` (see `ApiClient`)."""

    @property
    def vms(self) -> VmsSection:
        """Seed 001's VM calls: `client.vms.list()`, `.create({...})`, `.start(id)`, …"""
        return VmsSection(self)

    # -- short ids ------------------------------------------------------------------------

    def resolve_id(self, noun: str, given: str) -> str:
        """The whole id `given` stands for: itself when whole, else the one id of a
        `noun` ("workflow", "batch", "task", "checkpoint", or "task or workflow") that
        ends (as the tables show it) or starts with it. Raises `ApiError`: NOT_FOUND
        when none does, AMBIGUOUS_ID (naming the candidates) when several do."""
        if len(given) >= ID_LENGTH:
            return given
        fragment = given.lower()
        candidates: dict[str, str] = {}
        for found, label in self._labelled(noun):
            if found.lower().endswith(fragment) or found.lower().startswith(fragment):
                candidates[found] = label
        if len(candidates) == 1:
            return next(iter(candidates))
        if not candidates:
            # A task id may name a workflow too; the message speaks of the task.
            raise ApiError(f"{noun.split(' or ')[0]} {given!r} not found", "NOT_FOUND", 404)
        shown = [
            f"{found} ({label})" for found, label in list(candidates.items())[:SHOWN_CANDIDATES]
        ]
        more = len(candidates) - len(shown)
        raise ApiError(
            f"{given!r} matches {len(candidates)} {noun} ids; give more characters: "
            + ", ".join(shown)
            + (f", and {more} more" if more > 0 else ""),
            "AMBIGUOUS_ID",
            409,
            {"candidates": list(candidates)},
        )

    def _labelled(self, noun: str) -> list[tuple[str, str]]:
        """Every id of a `noun`, with the name a candidate is listed with."""
        rows: list[tuple[str, str]] = []
        if noun in ("task", "task or workflow"):
            rows += [(t.id, f"task {t.name}") for t in self._every("/tasks", {}, list[Task])]
        if noun in ("workflow", "task or workflow"):
            found = self._every("/workflows", {}, list[Workflow])
            rows += [(w.id, f"{w.kind} {w.name}") for w in found]
        elif noun == "batch":
            found = self._every("/workflows", {"kind": "batch"}, list[Workflow])
            rows += [(w.id, f"batch {w.name}") for w in found]
        elif noun == "checkpoint":
            found_cp = self._every("/rollback/checkpoints", {}, list[Checkpoint])
            rows += [(c.id, f"checkpoint {c.name}") for c in found_cp]
        return rows

    # -- health ---------------------------------------------------------------------------

    def health(self) -> str:
        return self._call("GET", "/health", str)

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
        return self._every("/tasks", {"status": status, "workflow_id": workflow_id}, list[Task])

    def get_task(self, task_id: str) -> Task:
        """A task; given a workflow id, the workflow in task shape (`kind == "workflow"`)."""
        return self._call("GET", f"/tasks/{_segment(task_id)}", Task)

    # -- workflows ------------------------------------------------------------------------

    def create_servers(
        self, infra: str, *, settings: str | None = None, check_mode: bool = False
    ) -> str:
        """Submit a servers workflow; return its id (it runs on after this returns)."""
        body = ServersCreate(infra=infra, settings=settings, check_mode=check_mode)
        return self._call("POST", "/workflows/servers/create", str, json=body)

    def create_taskserv(
        self,
        taskserv: str,
        infra: str,
        *,
        operation: str = "create",
        settings: str | None = None,
        check_mode: bool = False,
    ) -> str:
        body = TaskservCreate(
            taskserv=taskserv,
            infra=infra,
            operation=_infra_operation(operation),
            settings=settings,
            check_mode=check_mode,
        )
        return self._call("POST", "/workflows/taskserv/create", str, json=body)

    def create_cluster(
        self,
        cluster_type: str,
        infra: str,
        *,
        operation: str = "create",
        settings: str | None = None,
        check_mode: bool = False,
    ) -> str:
        body = ClusterCreate(
            cluster_type=cluster_type,
            infra=infra,
            operation=_infra_operation(operation),
            settings=settings,
            check_mode=check_mode,
        )
        return self._call("POST", "/workflows/cluster/create", str, json=body)

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
        return self._call("GET", f"/workflows/{_segment(workflow_id)}", Workflow)

    def workflow_events(self, workflow_id: str, after: int = 0) -> list[Event]:
        """The workflow's events past seq `after`, oldest first, every page."""
        found: list[Event] = []
        while True:
            page = self._call(
                "GET",
                f"/workflows/{_segment(workflow_id)}/events",
                list[Event],
                params={"after": after, "limit": MAX_PAGE},
            )
            found += page
            if len(page) < MAX_PAGE:
                return found
            after = page[-1].seq

    def workflow_plan(self, workflow_id: str) -> Plan:
        """What a check-mode workflow would change, per resource."""
        return self._call("GET", f"/workflows/{_segment(workflow_id)}/plan", Plan)

    def cancel_workflow(self, workflow_id: str) -> str:
        """Ask the orchestrator to cancel; return its message (also when already ended)."""
        return self._call("POST", f"/workflows/{_segment(workflow_id)}/cancel", str)

    # -- batches --------------------------------------------------------------------------

    def submit_batch(self, document: bytes, content_type: str = "application/yaml") -> Batch:
        """Submit a batch document (YAML or JSON); return it as accepted (it runs on)."""
        headers = {"Content-Type": content_type}
        return self._call("POST", "/batch/execute", Batch, content=document, headers=headers)

    def list_batches(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> Page[Batch]:
        query = {"status": status, "limit": limit, "offset": offset}
        return self._page("/batch/operations", query, list[Batch])

    def get_batch(self, batch_id: str) -> Batch:
        """A batch with every operation's `results`."""
        return self._call("GET", f"/batch/operations/{_segment(batch_id)}", Batch)

    def cancel_batch(self, batch_id: str) -> str:
        """Ask the orchestrator to cancel; return its message (also when already ended)."""
        return self._call("POST", f"/batch/operations/{_segment(batch_id)}/cancel", str)

    # -- checkpoints and rollback ---------------------------------------------------------

    def create_checkpoint(self, name: str, description: str = "") -> str:
        body = CheckpointIn(name=name, description=description)
        return self._call("POST", "/rollback/checkpoints", str, json=body)

    def list_checkpoints(
        self, *, limit: int | None = None, offset: int | None = None
    ) -> Page[Checkpoint]:
        query = {"limit": limit, "offset": offset}
        return self._page("/rollback/checkpoints", query, list[Checkpoint])

    def get_checkpoint(self, checkpoint_id: str) -> Checkpoint:
        return self._call("GET", f"/rollback/checkpoints/{_segment(checkpoint_id)}", Checkpoint)

    def delete_checkpoint(self, checkpoint_id: str) -> str:
        """Forget a checkpoint; return the server's message."""
        path = f"/rollback/checkpoints/{_segment(checkpoint_id)}"
        return self._call("DELETE", path, str)

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
        body = RollbackIn(checkpoint_id=checkpoint_id, operation_ids=operation_ids)
        return self._call("POST", "/rollback/execute", RollbackResult, json=body, timeout=timeout)

    def restore(self, checkpoint_id: str) -> str:
        """Reset the recorded inventory to the checkpoint's; return the server's message."""
        return self._call("POST", f"/rollback/restore/{_segment(checkpoint_id)}", str)

    def rollback_statistics(self) -> RollbackStatistics:
        return self._call("GET", "/rollback/statistics", RollbackStatistics)

    # -- providers and the inventory -------------------------------------------------------

    def list_providers(self) -> list[ProviderInstance]:
        return self._call("GET", "/providers", list[ProviderInstance])

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
        body = ApplyIn(params=params, check_mode=check_mode)
        answer: Any = str | dict[str, Any]
        data = self._call("POST", path, answer, json=body)
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

    def destroy(self, body: DestroyIn, *, timeout: float = ROLLBACK_TIMEOUT) -> DestroyOut:
        """Delete recorded resources (the plan only, with `check_mode`)."""
        return self._call("POST", "/resources/destroy", DestroyOut, json=body, timeout=timeout)

    def get_resource(self, resource_id: str) -> Resource:
        return self._call("GET", f"/resources/{_segment(resource_id)}", Resource)

    # -- state ----------------------------------------------------------------------------

    def workflow_progress(self, workflow_id: str) -> WorkflowProgress:
        path = f"/state/workflows/{_segment(workflow_id)}/progress"
        return self._call("GET", path, WorkflowProgress)

    def system_health(self) -> SystemHealth:
        return self._call("GET", "/state/system/health", SystemHealth)

    def system_metrics(self) -> SystemMetrics:
        return self._call("GET", "/state/system/metrics", SystemMetrics)

    def state_statistics(self) -> StateStatistics:
        return self._call("GET", "/state/statistics", StateStatistics)


def _infra_operation(operation: str) -> InfraOperation:
    # The server checks it (422 naming the allowed words); the client only carries it.
    return cast("InfraOperation", operation)


def _segment(value: str) -> str:
    """An id as one path segment: a `/` or `?` in it must not change the route."""
    return quote(value, safe="")
