"""The control center's one door for the orchestrator.

The orchestrator accepts the control center's credentials and obeys its policies and
audit trail, over the database both apps share. What it needs of them is here, and
nothing else of the control center is imported by the orchestrator's service or API:

    gate = Gate(engine, settings)   # an `orchestrator.http.access.Gatekeeper`
    principal = await gate.authenticate(request.headers.get("authorization"))
    await gate.authorize(principal, "create", "servers:web-01", {"ip": client_ip})
    await gate.record(AuditEntry(action="servers:create", resource="servers:*", …))

`account_routes` is the control center's own account app (`/auth/…` — login, refresh,
logout, MFA, register, password reset —, `/user/…`, `/api-keys`) and administration
endpoints (`/users`, `/policies` with `/policies/validate`, `/audit/logs`):
`control_center.app.account_app` over the same engine, for the orchestrator to mount
so that one base URL serves a client's whole flow and the console's admin pages: the
same handlers, policies, audit trail and rate limits, no proxy and no copy.

`seed_default_policies` creates the default policies once per database, whichever app
opens it first; `one_time_password` is the kind of password the control center makes
for a first admin, which the console's user pages make for a new user or a reset.

One implementation serves both apps: `Gate` calls the guard
(`control_center.guard`) and the audit trail (`control_center.audit`) the control
center's own handlers call.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send

from control_center.app import account_app
from control_center.audit import record_audit
from control_center.guard import authenticate, authorize, decide, decide_each
from control_center.passwords import one_time_password
from control_center.policy_set import seed_default_policies
from control_center.secret_keys import keys_for
from orchestrator.http.access import AuditEntry, Principal
from orchestrator.settings import Settings
from orchestrator.store.engine import AsyncEngine

__all__ = [
    "ACCOUNT_PATHS",
    "ADMIN_PATHS",
    "MOUNTS",
    "Gate",
    "account_routes",
    "one_time_password",
    "seed_default_policies",
]


@dataclass(frozen=True, slots=True)
class Gate:
    """Authentication, policies and the audit trail over one engine (a `Gatekeeper`)."""

    engine: AsyncEngine
    settings: Settings

    async def authenticate(self, authorization_header: str | None) -> Principal:
        return await authenticate(self.engine, self.settings, authorization_header)

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        await authorize(self.engine, principal, action, resource, context)

    async def allows(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        return (await decide(self.engine, principal, action, resource, context)).allowed

    async def allows_each(
        self,
        principal: Principal,
        action: str,
        checks: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> list[bool]:
        decisions = await decide_each(self.engine, principal, action, checks)
        return [decision.allowed for decision in decisions]

    async def record(self, entry: AuditEntry) -> None:
        await record_audit(self.engine, key=keys_for(self.settings).audit, **asdict(entry))

    def csrf_token(self, session_id: str) -> str:
        key = keys_for(self.settings).csrf
        return hmac.new(key, session_id.encode(), hashlib.sha256).hexdigest()


#: The control center's account endpoints the orchestrator serves too (each also under
#: `/api/v1` and `/v1`): sessions and MFA, self-service accounts, one's profile and
#: password, one's API keys.
ACCOUNT_PATHS = ("/auth", "/user", "/api-keys")
#: The control center's administration endpoints the orchestrator serves too (also under
#: `/api/v1`, as its own resources): users, policies, the audit log. Each checks the
#: caller's policies itself (`users:*`, `policies:*`, `audit:logs`).
ADMIN_PATHS = ("/users", "/policies", "/audit")
#: Where the orchestrator serves them: the account paths also under `/v1` (as account
#: clients spell them, seed 002), the administration ones as the orchestrator's own
#: resources (`/` and `/api/v1`).
MOUNTS: dict[str, tuple[str, ...]] = {
    "": (*ACCOUNT_PATHS, *ADMIN_PATHS),
    "/api/v1": (*ACCOUNT_PATHS, *ADMIN_PATHS),
    "/v1": ACCOUNT_PATHS,
}


def account_routes(engine: AsyncEngine, settings: Settings) -> dict[str, ASGIApp]:
    """The control center's account and administration app
    (`control_center.app.account_app`) over `engine`, as an ASGI app to mount at each
    path of `MOUNTS` (`/auth`, `/v1/auth`, `/api/v1/users`, …): mounted at `/v1/auth`,
    it answers `/v1/auth/login` as the control center answers `/auth/login`. Each
    request gets a scope of its own (the mounting app's state stays the mounting
    app's)."""
    app = account_app(settings, engine)

    async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope.get("route_handler")
        mount = min(handler.paths) if handler is not None else ""
        rest = str(scope.get("path", "/"))
        # Litestar matches a mount by a prefix of the text (`/user` takes `/users`,
        # leaving "s/"): the request's whole path, then what this app serves of it.
        whole = (mount + rest).rstrip("/") or "/"
        inner = {**scope, "path": served(whole), "root_path": "", "state": {}}
        await app(inner, receive, send)  # type: ignore[arg-type]

    return {prefix + base: mounted for prefix, bases in MOUNTS.items() for base in bases}


def served(path: str) -> str:
    """The control center's path for a request's `path` at the orchestrator (`/v1/auth/login`:
    `/auth/login`); a path outside `MOUNTS` as it is, which the app answers with 404."""
    for prefix in sorted(MOUNTS, key=len, reverse=True):
        if prefix and not path.startswith(prefix + "/"):
            continue
        inner = path[len(prefix) :]
        if any(inner == base or inner.startswith(base + "/") for base in MOUNTS[prefix]):
            return inner
        return path
    return path
