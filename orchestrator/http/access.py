"""Who is acting, and what an app's guard needs of the access control.

`Principal` is the user behind a request's credential. `Gatekeeper` is the interface a
guard is written against: authenticate a credential, authorize an action on a resource,
append to the audit trail. The control center implements it once, over the shared
database (`control_center.gate.Gate`); the orchestrator's API is given one when its app
is built (`orchestrator.api.app.create_app`).

Every mutating request, and every request refused with 401, 403 or 429 whatever its
method, is audited; `result_of` names the outcome of a status the same way in both apps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED = frozenset({401, 403, 429})


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is acting: a user, through a session token or one of their API keys."""

    user_id: str
    username: str
    roles: tuple[str, ...]
    via: Literal["jwt", "api_key"]
    #: The user's role requires TOTP and the user has not enrolled yet.
    mfa_pending: bool = False
    #: A session token of a user with TOTP on, whose logins all prove a code. (A session
    #: opened before the user enrolled, in it or elsewhere, counts too: how a session
    #: began is not stored.) Never an API key.
    mfa_verified: bool = False
    #: The user still has a one-time password.
    must_change_password: bool = False
    #: The access token's `jti`, or the API key's id.
    credential_id: str = ""
    expires_at: datetime | None = None
    #: The session (refresh-token family) a session token belongs to; "" for an API key.
    #: It outlives each access token's renewal.
    session_id: str = ""

    @property
    def primary_role(self) -> str:
        return self.roles[0] if self.roles else ""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record of the audit trail, as a guard writes it."""

    action: str
    resource: str
    #: `result_of` the response's status.
    result: str
    user_id: str | None
    #: JSON values, never a secret: stored and shown as given.
    details: dict[str, Any]
    ip: str | None


class Gatekeeper(Protocol):
    """Authentication, authorization and the audit trail, as a guard calls them."""

    async def authenticate(self, authorization_header: str | None) -> Principal:
        """Who presents `Authorization: Bearer <token or API key>`; raises
        `Unauthorized` otherwise."""
        ...

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Raise (`Forbidden` or a subclass) unless `principal` may do `action` on
        `resource`; `context` carries `ip`, `method`, `owner`."""
        ...

    async def allows(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether `authorize` would let it through (to filter a listing: no error)."""
        ...

    async def allows_each(
        self,
        principal: Principal,
        action: str,
        checks: Sequence[tuple[str, Mapping[str, Any]]],
    ) -> list[bool]:
        """`allows` for each (resource, context) of a listing, against one reading of
        the policies (not one per row)."""
        ...

    async def record(self, entry: AuditEntry) -> None:
        """Append one record to the audit trail."""
        ...

    def csrf_token(self, session_id: str) -> str:
        """The console's CSRF token for a session: keyed with a server secret, so only
        the server can make it, and bound to the session, so it outlives renewals."""
        ...


def result_of(status: int) -> str:
    """How the audit names the outcome of a response with this status."""
    if status in REFUSED:
        return "denied"
    if status >= 500:
        return "error"
    return "failure" if status >= 400 else "success"
