"""Authentication, policies, rate limits and audit on every orchestrator endpoint.

Every request but `/health`, the OpenAPI documents and (when `auth.metrics_open`)
`/metrics` carries a session JWT or an API key from the control center
(`Authorization: Bearer …`; the event stream also takes `?token=`). The route names an
action on a resource (the table below, documented in docs/security.md), which the
policies must allow. Each user has 100 requests a minute (10 batch submissions); every
mutating request, allowed or refused, and every refusal is written to the audit log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from orchestrator.api.deployment_routes import endpoints as deployment_endpoints
from orchestrator.api.host.routes import HOST_ENDPOINTS
from orchestrator.api.kubernetes_routes import ENDPOINTS as KUBERNETES_ENDPOINTS
from orchestrator.errors import DomainError
from orchestrator.http.access import (
    MUTATING,
    REFUSED,
    AuditEntry,
    Gatekeeper,
    Principal,
    result_of,
)
from orchestrator.http.aliases import full_path
from orchestrator.http.errors import RateLimited
from orchestrator.http.ratelimit import RateLimiter, RateLimitStatus
from orchestrator.service import Orchestrator

log = structlog.get_logger(__name__)

#: (method, route template) -> (action, resource kind, path parameter naming the id)
ENDPOINTS: dict[tuple[str, str], tuple[str, str, str | None]] = {
    ("GET", "/tasks"): ("list", "tasks", None),
    ("GET", "/tasks/{task_id}"): ("read", "tasks", "task_id"),
    ("POST", "/workflows/servers/create"): ("create", "servers", None),
    ("POST", "/workflows/taskserv/create"): ("create", "taskservs", None),
    ("POST", "/workflows/cluster/create"): ("create", "clusters", None),
    ("POST", "/workflows"): ("create", "workflows", None),
    ("GET", "/workflows"): ("list", "workflows", None),
    ("GET", "/workflows/{workflow_id}"): ("read", "workflows", "workflow_id"),
    ("GET", "/workflows/{workflow_id}/events"): ("read", "workflows", "workflow_id"),
    ("POST", "/workflows/{workflow_id}/cancel"): ("cancel", "workflows", "workflow_id"),
    ("GET", "/workflows/{workflow_id}/plan"): ("read", "workflows", "workflow_id"),
    ("POST", "/batch/execute"): ("execute", "batches", None),
    ("GET", "/batch/operations"): ("list", "batches", None),
    ("GET", "/batch/operations/{batch_id}"): ("read", "batches", "batch_id"),
    ("POST", "/batch/operations/{batch_id}/cancel"): ("cancel", "batches", "batch_id"),
    ("GET", "/state/workflows/{workflow_id}/progress"): ("read", "workflows", "workflow_id"),
    ("GET", "/state/workflows/{workflow_id}/snapshots"): ("read", "workflows", "workflow_id"),
    ("GET", "/state/system/metrics"): ("read", "state", None),
    ("GET", "/state/system/health"): ("read", "state", None),
    ("GET", "/state/statistics"): ("read", "state", None),
    ("POST", "/rollback/checkpoints"): ("create", "checkpoints", None),
    ("GET", "/rollback/checkpoints"): ("list", "checkpoints", None),
    ("GET", "/rollback/checkpoints/{checkpoint_id}"): ("read", "checkpoints", "checkpoint_id"),
    ("DELETE", "/rollback/checkpoints/{checkpoint_id}"): (
        "delete",
        "checkpoints",
        "checkpoint_id",
    ),
    ("POST", "/rollback/execute"): ("execute", "rollback", None),
    ("POST", "/rollback/restore/{checkpoint_id}"): ("restore", "checkpoints", "checkpoint_id"),
    ("GET", "/rollback/statistics"): ("read", "rollback", None),
    ("GET", "/webhooks/deliveries"): ("list", "webhooks", None),
    ("GET", "/providers"): ("list", "providers", None),
    # Each item is authorized too: `<operation>` on `<plural>:<name>` (`resources.py`).
    ("POST", "/providers/{instance}/{kind}/{operation}"): ("apply", "providers", "instance"),
    ("GET", "/resources"): ("list", "resources", None),
    ("GET", "/resources/{resource_id}"): ("read", "resources", "resource_id"),
    # A workflow of undos; each item needs `delete` on its own name (`servers:web-01`).
    ("POST", "/resources/destroy"): ("destroy", "workflows", None),
    # The VM API (seed 001): each VM is also checked with its owner (`orchestrator/api/vms.py`).
    ("GET", "/vms"): ("list", "vms", None),
    ("POST", "/vms"): ("create", "vms", None),
    ("GET", "/vms/{vm_id}"): ("read", "vms", "vm_id"),
    ("PUT", "/vms/{vm_id}"): ("update", "vms", "vm_id"),
    ("DELETE", "/vms/{vm_id}"): ("delete", "vms", "vm_id"),
    ("POST", "/vms/{vm_id}/start"): ("start", "vms", "vm_id"),
    ("POST", "/vms/{vm_id}/stop"): ("stop", "vms", "vm_id"),
    ("POST", "/vms/{vm_id}/restart"): ("restart", "vms", "vm_id"),
    ("POST", "/vms/{vm_id}/force-stop"): ("force-stop", "vms", "vm_id"),
    ("GET", "/vms/{vm_id}/console"): ("console", "vms", "vm_id"),
    ("GET", "/metrics"): ("read", "metrics", None),
    ("GET", "/ws"): ("read", "events", None),
    **HOST_ENDPOINTS,
    **deployment_endpoints(),
    **KUBERNETES_ENDPOINTS,
}
OPEN = ("/health", "/schema")
#: A route handler's `opt` key: the handler authenticates, audits and limits its requests
#: itself (the control center's account app, mounted at `/auth`; the web console's pages,
#: which check their session cookie through this class and act through this API in
#: process, `orchestrator.ui.routes`).
OWN_ACCESS = "own_access"
BATCH_SUBMISSION = ("POST", "/batch/execute")
_STATE_KEY = "provisioning_access"


@dataclass(slots=True)
class Access:
    """What the guard decided, for the audit record and the rate-limit headers."""

    action: str = ""
    resource: str = ""
    principal: Principal | None = None
    #: The `Authorization` value `principal` was proved by (a stream checks it again);
    #: never logged nor audited.
    credential: str | None = field(default=None, repr=False)
    ratelimit: RateLimitStatus | None = None
    error: DomainError | None = None


def route_key(method: str, template: str) -> tuple[str, str]:
    template = template.removeprefix("/api/v1")
    return method, (template.rstrip("/") or "/")


class Security:
    """The orchestrator's guard and audit middleware, over the control center's
    `gate` (authentication, policies, audit trail: see `orchestrator.http.access`)."""

    def __init__(self, orchestrator: Orchestrator, gate: Gatekeeper) -> None:
        self.orchestrator = orchestrator
        self.gate = gate
        self.limiter = RateLimiter()
        #: Sockets waiting for their first (auth) message, per client address
        #: (`orchestrator.api.sockets`).
        self.unauthenticated_sockets: Counter[str] = Counter()

    def is_open(self, template: str) -> bool:
        if template.startswith(OPEN):
            return True
        return template == "/metrics" and self.orchestrator.settings.auth.metrics_open

    async def guard(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        """Litestar guard: authenticate, rate-limit and authorize, or raise."""
        scope = connection.scope
        template = str(scope.get("path_template", scope["path"]))
        if self.is_open(template) or handler.opt.get(OWN_ACCESS):
            return
        method = str(scope.get("method", "GET"))  # a WebSocket upgrade is a GET
        key = route_key(method, template)
        action, kind, id_param = ENDPOINTS.get(key, ("access", "orchestrator", None))
        ident = str(connection.path_params.get(id_param, "*")) if id_param else "*"
        access = access_of(scope)
        access.action, access.resource = f"{kind}:{action}", f"{kind}:{ident}"
        header = connection.headers.get("authorization")
        if header is None and scope["type"] == ScopeType.WEBSOCKET:
            token = connection.query_params.get("token")
            if not token:
                return  # the stream takes a first {"type": "auth"} message instead
            header = f"Bearer {token}"
        await self.check(scope, header, action, key)

    async def check(
        self, scope: Scope, header: str | None, action: str, key: tuple[str, str]
    ) -> Principal:
        """Authenticate `header`, apply the rate limits and authorize `action` on the
        resource already noted for the request; record the outcome for the audit."""
        access = access_of(scope)
        try:
            principal = await self.gate.authenticate(header)
            access.principal, access.credential = principal, header
            self._limit(access, principal, key)
            await self.gate.authorize(
                principal, action, access.resource, {"ip": _client_ip(scope), "method": key[0]}
            )
        except DomainError as exc:
            access.error = exc
            raise
        return principal

    async def still_allowed(
        self, scope: Scope, header: str, action: str, resource: str | None = None
    ) -> Principal:
        """Who `header` is now, if it still authenticates and may still do `action` on
        `resource` (by default the one noted for this connection); raise otherwise. A
        stream's periodic check: no rate limit."""
        principal = await self.gate.authenticate(header)
        await self.gate.authorize(
            principal,
            action,
            resource or access_of(scope).resource,
            {"ip": _client_ip(scope), "method": "GET"},
        )
        return principal

    async def credential_valid(self, header: str | None) -> bool:
        try:
            await self.gate.authenticate(header)
        except DomainError:
            return False
        return True

    async def authorize_items(self, scope: Scope, items: list[tuple[str, str]]) -> None:
        """Authorize each (action, resource) a submission names (`create` on
        `servers:web-01`), for the principal the guard already let in."""
        access = access_of(scope)
        if access.principal is None:
            return
        for action, resource in items:
            try:
                await self.gate.authorize(
                    access.principal,
                    action,
                    resource,
                    {"ip": _client_ip(scope), "method": str(scope.get("method", ""))},
                )
            except DomainError as exc:
                access.error = exc
                access.resource = resource
                raise

    async def allows(self, scope: Scope, action: str, resource: str, owner: str | None) -> bool:
        """Whether the principal the guard let in may do `action` on `resource`, which
        belongs to `owner`."""
        return (await self.allows_each(scope, action, [(resource, owner)]))[0]

    async def allows_each(
        self, scope: Scope, action: str, items: Sequence[tuple[str, str | None]]
    ) -> list[bool]:
        """`allows` for each (resource, owner) of a listing that shows each caller what
        it may read, against one reading of the policies."""
        principal = access_of(scope).principal
        if principal is None:
            return [False] * len(items)
        ip, method = _client_ip(scope), str(scope.get("method", ""))
        checks = [
            (resource, {"ip": ip, "method": method, "owner": owner or ""})
            for resource, owner in items
        ]
        return await self.gate.allows_each(principal, action, checks)

    def _limit(self, access: Access, principal: Principal, key: tuple[str, str]) -> None:
        auth = self.orchestrator.settings.auth
        general = self.limiter.hit(f"user:{principal.user_id}", auth.rate_limit_general)
        access.ratelimit = general
        if not general.allowed:
            raise RateLimited(
                f"more than {general.limit} requests a minute; retry in {_wait(general)} s"
            )
        if key == BATCH_SUBMISSION:
            batch = self.limiter.hit(f"batch:{principal.user_id}", auth.rate_limit_batch)
            access.ratelimit = batch
            if not batch.allowed:
                raise RateLimited(
                    f"more than {batch.limit} batch submissions a minute; retry after {batch.reset}"
                )

    def audit(self, app: ASGIApp) -> ASGIApp:
        """ASGI middleware: rate-limit headers on every response, and an audit record for
        every mutating request and every refusal."""

        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return

            access = access_of(scope)

            async def noted(message: Any) -> None:
                if message["type"] == "http.response.start" and access.action:
                    message = self._headers(message, access)
                    status = int(message["status"])
                    if scope.get("method") in MUTATING or status in REFUSED:
                        await self._record(scope, access, status)
                await send(message)

            await app(scope, receive, noted)

        return middleware

    @staticmethod
    def _headers(message: Any, access: Access) -> Any:
        if access.ratelimit is None:
            return message
        extra = [
            (name.lower().encode(), value.encode())
            for name, value in access.ratelimit.headers().items()
        ]
        return {**message, "headers": [*(message.get("headers") or []), *extra]}

    async def _record(self, scope: Scope, access: Access, status: int) -> None:
        details: dict[str, Any] = {
            "method": scope.get("method"),
            "path": full_path(scope),
            "status": status,
            "app": "orchestrator",
        }
        if access.error is not None:
            details["code"] = access.error.code
            details["error"] = access.error.message
        principal = access.principal
        try:
            entry = AuditEntry(
                action=access.action,
                resource=access.resource,
                result=result_of(status),
                user_id=principal.user_id if principal else None,
                details=details,
                ip=_client_ip(scope),
            )
            await self.gate.record(entry)
        except Exception:
            log.exception("audit record failed", action=access.action)


def _wait(status: RateLimitStatus) -> int:
    return max(1, status.reset - int(time.time()))


def access_of(scope: Scope) -> Access:
    state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[typeddict-item]
    access: Access = state.setdefault(_STATE_KEY, Access())
    return access


def user_of(scope: Scope) -> str | None:
    """The id of the user the guard let in (a workflow's owner), if any."""
    principal = access_of(scope).principal
    return None if principal is None else principal.user_id


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return str(client[0]) if client else None
