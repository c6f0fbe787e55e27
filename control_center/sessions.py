"""Sessions: a login's token pair, its rotation, and its end.

A login starts a family of refresh tokens. `/auth/refresh` spends the presented refresh
token for the next pair of the same family. An access token is accepted only while the
session that issued it exists and is not revoked (`guard.authenticate`, one indexed
lookup per request, in both apps): a signed token whose `jti` no session issued is
refused, and revoking a family (logout, a refresh token presented twice, a password
change, disabling the user) ends its access tokens at the next request. The rows are
`control_center.store.sessions`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_center.errors import Unauthorized
from control_center.store import sessions as store
from control_center.store.records import RefreshRefusal, TokenPair
from control_center.tokens import (
    IssuedToken,
    decode_access_token,
    digest,
    issue_access_token,
    new_refresh_token,
    utcnow,
)
from orchestrator.settings import AuthSettings
from orchestrator.store.engine import AsyncEngine


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    access: IssuedToken
    refresh_token: str
    refresh_expires_at: datetime


def _issue(
    auth: AuthSettings,
    key: str,
    user_id: str,
    roles: Sequence[str],
    not_after: datetime | None = None,
) -> tuple[TokenPair, Session]:
    """A new pair for the user: what the store keeps of it, and the session itself;
    neither token outlives `not_after` when given."""
    now = utcnow()
    expires_at = now + timedelta(seconds=auth.refresh_token_ttl)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    cap = expires_at if not_after is not None else None
    access = issue_access_token(auth, key, user_id, list(roles), now, not_after=cap)
    refresh = new_refresh_token()
    pair = TokenPair(digest(refresh), access.jti, access.expires_at, now, expires_at)
    return pair, Session(user_id, access, refresh, expires_at)


async def start_session(
    engine: AsyncEngine,
    auth: AuthSettings,
    key: str,
    user_id: str,
    roles: Sequence[str],
    *,
    mfa: bool = False,
) -> Session:
    """A login's session (`mfa`: the login proved a second factor)."""
    pair, session = _issue(auth, key, user_id, roles)
    await store.start_session(engine, user_id, pair, mfa=mfa)
    return session


class RefreshRefused(Unauthorized):
    """The refresh token is unknown, expired or revoked; `user_id` when known."""

    def __init__(self, message: str, user_id: str | None = None, reused: bool = False) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.reused = reused


_REFUSALS = {
    "unknown": "the refresh token is invalid",
    "revoked": "the refresh token has been revoked",
    "expired": "the refresh token has expired; log in again",
    "disabled": "the account is disabled",
    "reused": "the refresh token was already used; every token of this session is revoked",
}


_ACCESS_REFUSALS = {
    "unknown": "the token is invalid",
    "revoked": "the session has ended (logout, a reused token or a password change); log in again",
    "expired": "the session's refresh lifetime is over; log in again",
    "disabled": "the account is disabled",
    "reused": "this token was already used to refresh; every token of this session is revoked",
}


def looks_like_access_token(token: str) -> bool:
    """A JWT (three dot-separated parts); refresh tokens have no dot."""
    return token.count(".") == 2


async def rotate(engine: AsyncEngine, auth: AuthSettings, key: str, presented: str) -> Session:
    """Spend a pair for the next one of the same session; a pair spent twice revokes the
    session.

    `presented` is the refresh token (the next pair lives a full refresh lifetime), or
    the current, unexpired access token (seed 003's refresh): that spends the pair it
    was issued with, so it works once, and the next pair never outlives the refresh
    token of that pair, so a chain of such refreshes ends with the session's lifetime."""
    if looks_like_access_token(presented):
        claims = decode_access_token(auth, key, presented)
        rotated = await store.rotate(
            engine,
            lambda user_id, roles, until: _issue(auth, key, user_id, roles, until),
            access_jti=str(claims["jti"]),
        )
        refusals = _ACCESS_REFUSALS
    else:
        rotated = await store.rotate(
            engine,
            lambda user_id, roles, _until: _issue(auth, key, user_id, roles),
            refresh_hash=digest(presented),
        )
        refusals = _REFUSALS
    if isinstance(rotated, RefreshRefusal):
        raise RefreshRefused(
            refusals[rotated.reason], rotated.user_id, reused=rotated.reason == "reused"
        )
    return rotated


async def end_session(engine: AsyncEngine, jti: str) -> None:
    """Logout: revoke the session (refresh family) that issued this access token."""
    await store.end_session(engine, jti)
