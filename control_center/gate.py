"""The control center's one door for the orchestrator.

The orchestrator accepts the control center's credentials and obeys its policies and
audit trail, over the database both apps share. What it needs of them is here, and
nothing else of the control center is imported by the orchestrator's service or API:

    gate = Gate(engine, settings)   # an `orchestrator.http.access.Gatekeeper`
    principal = await gate.authenticate(request.headers.get("authorization"))
    await gate.authorize(principal, "create", "servers:web-01", {"ip": client_ip})
    await gate.record(AuditEntry(action="servers:create", resource="servers:*", …))

`account_routes` is the control center's own account app (`/auth/…` — login, refresh,
logout, MFA, register, password reset —, `/user/…`, `/api-keys`:
`control_center.app.account_app`) over the same engine, for the orchestrator to mount
so that one base URL serves a client's whole flow: the same handlers, audit trail and
rate limits, no proxy and no copy.

`seed_default_policies` creates the default policies once per database, whichever app
opens it first. One implementation serves both apps: `Gate` calls the guard
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
from control_center.policy_set import seed_default_policies
from control_center.secret_keys import keys_for
from orchestrator.http.access import AuditEntry, Principal
from orchestrator.settings import Settings
from orchestrator.store.engine import AsyncEngine

__all__ = ["ACCOUNT_PATHS", "Gate", "account_routes", "seed_default_policies"]


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


def account_routes(engine: AsyncEngine, settings: Settings) -> dict[str, ASGIApp]:
    """The control center's account app (`control_center.app.account_app`) over
    `engine`, as one ASGI app per path of `ACCOUNT_PATHS`, to mount at that path (or at
    `/api/v1` + path, …): mounted at `/v1/auth`, it answers `/v1/auth/login` as the
    control center answers `/auth/login`. Each request gets a scope of its own (the
    mounting app's state stays the mounting app's)."""
    app = account_app(settings, engine)

    def under(base: str) -> ASGIApp:
        async def mounted(scope: Scope, receive: Receive, send: Send) -> None:
            rest = str(scope.get("path", "/"))
            path = base + ("" if rest == "/" else rest)
            inner = {**scope, "path": path, "root_path": "", "state": {}}
            await app(inner, receive, send)  # type: ignore[arg-type]

        return mounted

    return {base: under(base) for base in ACCOUNT_PATHS}
