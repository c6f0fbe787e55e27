"""Sessions: refresh-token families, and the access tokens they issued.

A login starts a family; each rotation marks the presented refresh token used and
stores the next pair in the same family. Each row records the `jti` of the access
token issued with it (`session_of`, one indexed lookup per request). The tokens
themselves are made by the caller (`control_center.sessions`): only their digests and
identifiers are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.store.models import RefreshToken
from control_center.store.models import User as UserRow
from control_center.store.records import RefreshRefusal, SessionState, TokenPair
from control_center.store.users import user_of
from orchestrator.clock import utcnow
from orchestrator.ids import new_id

T = TypeVar("T")

#: Makes the next pair for (user id, roles, the spent refresh token's expiry): what to
#: store, and what to give back.
Issue = Callable[[str, Sequence[str], datetime], tuple[TokenPair, T]]


async def _store(
    connection: AsyncConnection, user_id: str, family_id: str, pair: TokenPair, mfa: bool
) -> None:
    await connection.execute(
        insert(RefreshToken),
        [
            {
                "id": new_id(),
                "token_hash": pair.refresh_hash,
                "family_id": family_id,
                "user_id": user_id,
                "access_jti": pair.access_jti,
                "access_expires_at": pair.access_expires_at,
                "used": False,
                "revoked": False,
                "mfa": mfa,
                "created_at": pair.created_at,
                "expires_at": pair.expires_at,
            }
        ],
    )


async def start_session(
    engine: AsyncEngine, user_id: str, pair: TokenPair, *, mfa: bool = False
) -> None:
    """Store the first pair of a new family (a login; `mfa`: it proved a second factor)."""
    async with engine.begin() as connection:
        await _store(connection, user_id, new_id(), pair, mfa)


class _Refused(Exception):
    """Leaves the rotation's transaction, rolled back, with the refusal."""

    def __init__(self, refusal: RefreshRefusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


async def rotate(
    engine: AsyncEngine,
    issue: Issue[T],
    *,
    refresh_hash: str | None = None,
    access_jti: str | None = None,
) -> T | RefreshRefusal:
    """Spend a pair of a session — named by its refresh token's digest `refresh_hash`, or
    by the `access_jti` of the access token issued with it — and store the pair `issue`
    makes for its enabled user, in one transaction; return what `issue` gave back.

    A refusal changes nothing, except that a pair already spent revokes its whole
    family, in a transaction of its own."""
    if (refresh_hash is None) == (access_jti is None):
        raise ValueError("name the pair by exactly one of refresh_hash and access_jti")
    which = (
        RefreshToken.token_hash == refresh_hash
        if refresh_hash is not None
        else RefreshToken.access_jti == access_jti
    )
    try:
        async with engine.begin() as connection:
            token = (await connection.execute(select(RefreshToken.__table__).where(which))).first()
            if token is None:
                raise _Refused(RefreshRefusal("unknown"))
            if token.revoked:
                raise _Refused(RefreshRefusal("revoked", token.user_id))
            if token.expires_at <= utcnow():
                raise _Refused(RefreshRefusal("expired", token.user_id))
            spent = await connection.execute(
                update(RefreshToken)
                .where(RefreshToken.id == token.id, RefreshToken.used.is_(False))
                .values(used=True)
            )
            if spent.rowcount != 0:  # type: ignore[attr-defined]
                user = (
                    await connection.execute(
                        select(UserRow.roles, UserRow.enabled).where(UserRow.id == token.user_id)
                    )
                ).first()
                if user is None or not user.enabled:
                    raise _Refused(RefreshRefusal("disabled", token.user_id))
                roles = [str(role) for role in user.roles]
                pair, issued = issue(token.user_id, roles, token.expires_at)
                await _store(connection, token.user_id, token.family_id, pair, token.mfa)
                return issued
    except _Refused as refused:
        return refused.refusal
    await revoke_family(engine, token.family_id)
    return RefreshRefusal("reused", token.user_id)


async def revoke_family(engine: AsyncEngine, family_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(RefreshToken).where(RefreshToken.family_id == family_id).values(revoked=True)
        )


async def end_session(engine: AsyncEngine, jti: str) -> None:
    """Revoke the session (refresh family) that issued access token `jti`."""
    async with engine.begin() as connection:
        family = select(RefreshToken.family_id).where(RefreshToken.access_jti == jti)
        await connection.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id.in_(family.scalar_subquery()))
            .values(revoked=True)
        )


async def session_of(engine: AsyncEngine, jti: str) -> SessionState | None:
    """The session that issued access token `jti`, with its user; None when none did.

    Runs for every request with a session token: one lookup by the indexed `access_jti`
    and the user's primary key."""
    async with engine.connect() as connection:
        found = await connection.execute(
            select(
                UserRow.__table__, RefreshToken.revoked, RefreshToken.family_id, RefreshToken.mfa
            )
            .join_from(RefreshToken, UserRow, RefreshToken.user_id == UserRow.id)
            .where(RefreshToken.access_jti == jti)
        )
        row = found.mappings().first()
    return (
        None
        if row is None
        else SessionState(
            user_of(row), bool(row["revoked"]), str(row["family_id"]), bool(row["mfa"])
        )
    )
