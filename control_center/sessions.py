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
    auth: AuthSettings, key: str, user_id: str, roles: Sequence[str]
) -> tuple[TokenPair, Session]:
    """A new pair for the user: what the store keeps of it, and the session itself."""
    now = utcnow()
    access = issue_access_token(auth, key, user_id, list(roles), now)
    refresh = new_refresh_token()
    expires_at = now + timedelta(seconds=auth.refresh_token_ttl)
    pair = TokenPair(digest(refresh), access.jti, access.expires_at, now, expires_at)
    return pair, Session(user_id, access, refresh, expires_at)


async def start_session(
    engine: AsyncEngine, auth: AuthSettings, key: str, user_id: str, roles: Sequence[str]
) -> Session:
    pair, session = _issue(auth, key, user_id, roles)
    await store.start_session(engine, user_id, pair)
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


async def rotate(engine: AsyncEngine, auth: AuthSettings, key: str, refresh_token: str) -> Session:
    """Spend a refresh token for a new pair; a reused one revokes its family."""
    rotated = await store.rotate(
        engine,
        digest(refresh_token),
        lambda user_id, roles: _issue(auth, key, user_id, roles),
    )
    if isinstance(rotated, RefreshRefusal):
        raise RefreshRefused(
            _REFUSALS[rotated.reason], rotated.user_id, reused=rotated.reason == "reused"
        )
    return rotated


async def end_session(engine: AsyncEngine, jti: str) -> None:
    """Logout: revoke the session (refresh family) that issued this access token."""
    await store.end_session(engine, jti)
