"""Sessions in the database: refresh-token families, and the access tokens they issued.

A login starts a family. `/auth/refresh` marks the presented refresh token used and
issues the next one in the same family. Each row records the `jti` of the access token
issued with it, and an access token is accepted only while its row exists and its
family is not revoked (`session_user`, one indexed lookup per request, in both apps):
a signed token whose `jti` no session issued is refused, and revoking a family (logout,
a refresh token presented twice, a password change, disabling the user) ends its
access tokens at the next request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.errors import Unauthorized
from control_center.store.models import RefreshToken, User
from control_center.tokens import (
    IssuedToken,
    digest,
    issue_access_token,
    new_refresh_token,
    utcnow,
)
from orchestrator.ids import new_id
from orchestrator.settings import AuthSettings


@dataclass(frozen=True, slots=True)
class Session:
    user_id: str
    access: IssuedToken
    refresh_token: str
    refresh_expires_at: datetime

    def as_response(self) -> dict[str, Any]:
        return {
            "token": self.access.token,
            "expires_at": self.access.expires_at,
            "refresh_token": self.refresh_token,
            "refresh_expires_at": self.refresh_expires_at,
        }


async def _start(
    connection: AsyncConnection,
    auth: AuthSettings,
    key: str,
    user_id: str,
    roles: list[str],
    family_id: str,
) -> Session:
    now = utcnow()
    access = issue_access_token(auth, key, user_id, roles, now)
    refresh = new_refresh_token()
    expires_at = now + timedelta(seconds=auth.refresh_token_ttl)
    await connection.execute(
        insert(RefreshToken),
        [
            {
                "id": new_id(),
                "token_hash": digest(refresh),
                "family_id": family_id,
                "user_id": user_id,
                "access_jti": access.jti,
                "access_expires_at": access.expires_at,
                "used": False,
                "revoked": False,
                "created_at": now,
                "expires_at": expires_at,
            }
        ],
    )
    return Session(user_id, access, refresh, expires_at)


async def start_session(
    engine: AsyncEngine, auth: AuthSettings, key: str, user_id: str, roles: list[str]
) -> Session:
    async with engine.begin() as connection:
        return await _start(connection, auth, key, user_id, roles, new_id())


class RefreshRefused(Unauthorized):
    """The refresh token is unknown, expired or revoked; `user_id` when known."""

    def __init__(self, message: str, user_id: str | None = None, reused: bool = False) -> None:
        super().__init__(message)
        self.user_id = user_id
        self.reused = reused


async def rotate(engine: AsyncEngine, auth: AuthSettings, key: str, refresh_token: str) -> Session:
    """Spend a refresh token for a new pair; a reused one revokes its family."""
    token_hash = digest(refresh_token)
    async with engine.begin() as connection:
        token = (
            await connection.execute(
                select(RefreshToken.__table__).where(RefreshToken.token_hash == token_hash)
            )
        ).first()
        if token is None:
            raise RefreshRefused("the refresh token is invalid")
        if token.revoked:
            raise RefreshRefused("the refresh token has been revoked", token.user_id)
        if token.expires_at <= utcnow():
            raise RefreshRefused("the refresh token has expired; log in again", token.user_id)
        spent = await connection.execute(
            update(RefreshToken)
            .where(RefreshToken.id == token.id, RefreshToken.used.is_(False))
            .values(used=True)
        )
        if spent.rowcount == 0:  # type: ignore[attr-defined]
            family_id, user_id = token.family_id, token.user_id
        else:
            user = (
                await connection.execute(
                    select(User.roles, User.enabled).where(User.id == token.user_id)
                )
            ).first()
            if user is None or not user.enabled:
                raise RefreshRefused("the account is disabled", token.user_id)
            return await _start(
                connection, auth, key, token.user_id, list(user.roles), token.family_id
            )
    # Reuse: revoke in a transaction of its own, which the refusal must not roll back.
    await revoke_family(engine, family_id)
    raise RefreshRefused(
        "the refresh token was already used; every token of this session is revoked",
        user_id,
        reused=True,
    )


async def revoke_family(engine: AsyncEngine, family_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(RefreshToken).where(RefreshToken.family_id == family_id).values(revoked=True)
        )


async def end_session(engine: AsyncEngine, jti: str) -> None:
    """Logout: revoke the session (refresh family) that issued this access token."""
    async with engine.begin() as connection:
        family = select(RefreshToken.family_id).where(RefreshToken.access_jti == jti)
        await connection.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id.in_(family.scalar_subquery()))
            .values(revoked=True)
        )


async def end_sessions_of(
    connection: AsyncConnection, user_id: str, keep_jti: str | None = None
) -> None:
    """Revoke every session of `user_id`, except the one that issued `keep_jti`."""
    statement = update(RefreshToken).where(RefreshToken.user_id == user_id)
    if keep_jti is not None:
        kept = select(RefreshToken.family_id).where(
            RefreshToken.access_jti == keep_jti, RefreshToken.user_id == user_id
        )
        statement = statement.where(RefreshToken.family_id.not_in(kept.scalar_subquery()))
    await connection.execute(statement.values(revoked=True))


async def session_user(engine: AsyncEngine, jti: str) -> Any:
    """The session row that issued access token `jti`, joined with its user (`id,
    username, roles, enabled, mfa_enabled, must_change_password, revoked`), or None.

    Runs for every request with a session token: one lookup by the indexed `access_jti`
    and the user's primary key."""
    async with engine.connect() as connection:
        found = await connection.execute(
            select(
                User.id,
                User.username,
                User.roles,
                User.enabled,
                User.mfa_enabled,
                User.must_change_password,
                RefreshToken.revoked,
            )
            .join_from(RefreshToken, User, RefreshToken.user_id == User.id)
            .where(RefreshToken.access_jti == jti)
        )
        return found.first()
