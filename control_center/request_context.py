"""What a request carries through the control center: who is acting, what the audit
record will say, and the rate-limit status for the response headers.

Handlers get the `principal` dependency, which authenticates, counts the request
against the user's budget, and refuses users who must first enroll MFA or change a
one-time password, unless the handler's `opt["tolerates"]` names that state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from control_center.errors import RateLimited
from control_center.guard import (
    authenticate,
    authorize,
    check_restrictions,
)
from orchestrator.http.access import Principal
from orchestrator.http.ratelimit import RateLimiter, RateLimitStatus
from orchestrator.settings import Settings
from orchestrator.store.engine import AsyncEngine

NOTE_KEY = "control_center.audit"

AnyRequest = Request[Any, Any, Any]

#: The `principal` handler parameter, provided by `provide_principal`.
CurrentPrincipal = NamedDependency[Principal]


@dataclass(slots=True)
class AuditNote:
    """Filled in while a request is handled; written by the audit middleware."""

    action: str | None = None
    resource: str | None = None
    user_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None
    ratelimit: RateLimitStatus | None = None


@dataclass(slots=True)
class Services:
    """What every handler needs, kept in the app's state."""

    settings: Settings
    limiter: RateLimiter
    engine: AsyncEngine | None = None

    @property
    def db(self) -> AsyncEngine:
        if self.engine is None:
            raise RuntimeError("the control center's database is not open")
        return self.engine


def services(state: State) -> Services:
    found: Services = state.services
    return found


def note_of(scope: Any) -> AuditNote | None:
    state = scope.get("state")
    found = state.get(NOTE_KEY) if isinstance(state, dict) else None
    return found if isinstance(found, AuditNote) else None


def note(request: AnyRequest) -> AuditNote:
    found = note_of(request.scope)
    if found is None:  # outside the middleware (not expected): a note nobody reads
        found = AuditNote()
        request.scope.setdefault("state", {})[NOTE_KEY] = found
    return found


def client_ip(request: AnyRequest) -> str:
    return request.client.host if request.client else ""


def audit_as(request: AnyRequest, action: str, resource: str, **details: Any) -> AuditNote:
    """Name the action and resource this request's audit record shows."""
    record = note(request)
    record.action, record.resource = action, resource
    record.details.update(details)
    return record


def limit(request: AnyRequest, key: str, budget: int) -> None:
    """Count this request against `key`'s budget per minute; 429 once it is spent."""
    status = services(request.app.state).limiter.hit(key, budget)
    record = note(request)
    if record.ratelimit is None or status.remaining < record.ratelimit.remaining:
        record.ratelimit = status
    if not status.allowed:
        raise RateLimited(
            f"too many requests: at most {budget} per minute; "
            f"try again after {status.reset} (Unix time)",
            {"limit": budget, "reset": status.reset},
        )


def limit_auth_attempts(request: AnyRequest) -> None:
    """The authentication budget per client address (seed 003: 5 per minute)."""
    budget = services(request.app.state).settings.auth.rate_limit_auth
    limit(request, f"auth:{client_ip(request)}", budget)


async def provide_principal(request: AnyRequest) -> Principal:
    service = services(request.app.state)
    principal = await authenticate(
        service.db, service.settings, request.headers.get("authorization")
    )
    note(request).user_id = principal.user_id
    limit(request, f"user:{principal.user_id}", service.settings.auth.rate_limit_general)
    check_restrictions(principal, request.route_handler.opt.get("tolerates", ()))
    return principal


async def check(
    request: AnyRequest,
    principal: Principal,
    action: str,
    resource: str,
    owner: str | None = None,
) -> None:
    """Record what is attempted, then raise unless the policies allow it."""
    kind = resource.split(":", 1)[0]
    audit_as(request, f"{kind}.{action}", resource)
    context = {"ip": client_ip(request), "method": request.method, "owner": owner or ""}
    await authorize(services(request.app.state).db, principal, action, resource, context)
