"""Sessions in the database: refresh-token families and revoked access tokens.

A login starts a family. `/auth/refresh` marks the presented refresh token used and
issues the next one in the same family. Presenting a token that was already used
means it was copied: the whole family and the access tokens it issued are revoked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.errors import Unauthorized
from control_center.models import RefreshToken, RevokedToken, User
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


async def _revoke_jtis(connection: AsyncConnection, jtis: list[tuple[str, datetime]]) -> None:
    if not jtis:
        return
    now = utcnow()
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(RevokedToken).on_conflict_do_nothing(index_elements=["jti"])
    await connection.execute(
        statement,
        [{"jti": jti, "expires_at": expires_at, "revoked_at": now} for jti, expires_at in jtis],
    )


async def revoke_family(engine: AsyncEngine, family_id: str) -> None:
    async with engine.begin() as connection:
        rows = await connection.execute(
            select(RefreshToken.access_jti, RefreshToken.access_expires_at).where(
                RefreshToken.family_id == family_id
            )
        )
        jtis = [(row.access_jti, row.access_expires_at) for row in rows]
        await connection.execute(
            update(RefreshToken).where(RefreshToken.family_id == family_id).values(revoked=True)
        )
        await _revoke_jtis(connection, jtis)


async def end_session(engine: AsyncEngine, jti: str, expires_at: datetime | None) -> None:
    """Logout: revoke this access token and the session (refresh family) it belongs to."""
    async with engine.begin() as connection:
        family = (
            await connection.execute(
                select(RefreshToken.family_id).where(RefreshToken.access_jti == jti)
            )
        ).scalar_one_or_none()
        await _revoke_jtis(connection, [(jti, expires_at or utcnow() + timedelta(days=1))])
        await connection.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    if family is not None:
        await revoke_family(engine, family)


async def is_revoked(connection: AsyncConnection, jti: str) -> bool:
    found = await connection.execute(select(RevokedToken.jti).where(RevokedToken.jti == jti))
    return found.first() is not None
