"""Authentication and authorization for both apps, independent of any web framework.

    principal = await authenticate(engine, settings, request.headers.get("authorization"))
    await authorize(engine, principal, "create", "servers:web-01", {"ip": client_ip})

`authenticate` accepts a session JWT or an API key and raises `Unauthorized`;
`authorize` raises `MfaRequired` or `PasswordChangeRequired` while the user must act
on their account first, and `Forbidden` when the policies do not allow the action.
The user's roles and state, and for a session token whether its session still lives,
are read from the database on every call (one query), so disabling a user, changing
roles, ending a session or changing a password takes effect at once, as does any policy
change.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from control_center.errors import Forbidden, MfaRequired, PasswordChangeRequired, Unauthorized
from control_center.policies import Decision
from control_center.policy_set import policy_engine
from control_center.store import api_keys, sessions, users
from control_center.store.records import User
from control_center.tokens import (
    bearer_credential,
    decode_access_token,
    digest,
    is_api_key,
    signing_key,
    utcnow,
)
from orchestrator.errors import NotFound
from orchestrator.http.access import Principal
from orchestrator.settings import AuthSettings, Settings
from orchestrator.store.engine import AsyncEngine

__all__ = [
    "MFA_PENDING",
    "MUST_CHANGE_PASSWORD",
    "Principal",
    "authenticate",
    "authorize",
    "check_restrictions",
    "decide",
    "key_for",
]

MFA_PENDING = "mfa_pending"
MUST_CHANGE_PASSWORD = "must_change_password"  # noqa: S105 (a state, not a password)


@functools.lru_cache(maxsize=8)
def _cached_key(secret: str, algorithm: str, data_dir: str) -> str:
    auth = AuthSettings(jwt_secret=secret, jwt_algorithm=algorithm)
    return signing_key(Settings(data_dir=data_dir, auth=auth))


def key_for(settings: Settings) -> str:
    """The JWT signing key (read from `<data_dir>/jwt.key` once per process)."""
    return _cached_key(settings.auth.jwt_secret, settings.auth.jwt_algorithm, settings.data_dir)


def _principal(
    settings: Settings,
    user: User,
    via: str,
    credential_id: str,
    expires_at: datetime | None,
    session_id: str = "",
    session_mfa: bool = False,
) -> Principal:
    needs_mfa = any(role in settings.auth.mfa_required_roles for role in user.roles)
    return Principal(
        user_id=user.id,
        username=user.username,
        roles=user.roles,
        via="jwt" if via == "jwt" else "api_key",
        mfa_pending=needs_mfa and not user.mfa_enabled,
        # The session's login proved TOTP (or a backup code), not merely "TOTP is on now".
        mfa_verified=via == "jwt" and session_mfa and user.mfa_enabled,
        must_change_password=user.must_change_password,
        credential_id=credential_id,
        expires_at=expires_at,
        session_id=session_id,
    )


async def authenticate(
    engine: AsyncEngine, settings: Settings, authorization_header: str | None
) -> Principal:
    """Who presents `Authorization: Bearer <jwt or API key>`; `Unauthorized` otherwise."""
    credential = bearer_credential(authorization_header)
    if is_api_key(credential):
        return await _api_key_principal(engine, settings, credential)
    claims = decode_access_token(settings.auth, key_for(settings), credential)
    # The signature says who made the token; only the session row says it is still
    # good: a token is accepted while the session that issued it lives.
    session = await sessions.session_of(engine, claims["jti"])
    if session is None or session.user.id != claims["sub"]:
        raise Unauthorized("the token belongs to no session; log in again")
    if session.revoked:
        raise Unauthorized(
            "the token has been revoked (logout, a reused refresh token, a password change "
            "or a disabled account); log in again"
        )
    if not session.user.enabled:
        raise Unauthorized("the account no longer exists or is disabled")
    expires_at = datetime.fromtimestamp(claims["exp"], UTC)
    return _principal(
        settings, session.user, "jwt", claims["jti"], expires_at, session.family_id, session.mfa
    )


async def _api_key_principal(engine: AsyncEngine, settings: Settings, key: str) -> Principal:
    record = await api_keys.find_api_key(engine, digest(key))
    if record is None:
        raise Unauthorized("the API key is invalid")
    if record.revoked_at is not None:
        raise Unauthorized("the API key has been revoked")
    if record.expires_at is not None and record.expires_at <= utcnow():
        raise Unauthorized("the API key has expired")
    disabled = Unauthorized("the account owning this API key is disabled")
    try:
        user = await users.get_user(engine, record.user_id)
    except NotFound:
        raise disabled from None
    if not user.enabled:
        raise disabled
    await api_keys.touch(engine, record.id)
    return _principal(settings, user, "api_key", record.id, record.expires_at)


def check_restrictions(principal: Principal, tolerated: Collection[str] = ()) -> None:
    """Raise while the user must first enroll MFA or change a one-time password, unless
    `tolerated` names that state (`MFA_PENDING`, `MUST_CHANGE_PASSWORD`)."""
    if principal.mfa_pending and MFA_PENDING not in tolerated:
        raise MfaRequired(
            "your role requires multi-factor authentication: enroll with POST "
            "/auth/mfa/enroll and POST /auth/mfa/verify first"
        )
    if principal.must_change_password and MUST_CHANGE_PASSWORD not in tolerated:
        raise PasswordChangeRequired(
            "you must change your one-time password first (PUT /user/password)"
        )


async def decide(
    engine: AsyncEngine,
    principal: Principal,
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> Decision:
    """The policies' answer, without raising (for callers that audit the reason)."""
    return (await policy_engine(engine)).evaluate(principal, action, resource, context)


async def decide_each(
    engine: AsyncEngine,
    principal: Principal,
    action: str,
    checks: Sequence[tuple[str, Mapping[str, Any]]],
) -> list[Decision]:
    """`decide` for each (resource, context), against one reading of the policies."""
    policies = await policy_engine(engine)
    return [policies.evaluate(principal, action, resource, context) for resource, context in checks]


async def authorize(
    engine: AsyncEngine,
    principal: Principal,
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> None:
    """Raise unless `principal` may do `action` on `resource`.

    `context` may carry `ip`, `method`, `owner` (the id of the user the resource belongs
    to) and `now` (a datetime); conditions read them as `request.ip`, `request.method`,
    `resource.owner` and `time.hour`.
    """
    check_restrictions(principal)
    decision = await decide(engine, principal, action, resource, context)
    if not decision.allowed:
        raise Forbidden(
            f"forbidden: '{action}' on '{resource}' ({decision.reason})",
            {"action": action, "resource": resource, "reason": decision.reason},
        )
