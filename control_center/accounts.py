"""Users and their MFA state in the database: every query on `users` and
`mfa_backup_codes` lives here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.secret_keys import SEALED
from control_center.sessions import end_sessions_of
from control_center.store.models import MfaBackupCode, User
from control_center.tokens import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.ids import new_id


async def _taken(
    connection: AsyncConnection, username: str | None, email: str | None, other_than: str | None
) -> None:
    for column, value in ((User.username, username), (User.email, email)):
        if value is None:
            continue
        query = select(User.id).where(func.lower(column) == value.lower())
        if other_than is not None:
            query = query.where(User.id != other_than)
        if (await connection.execute(query)).first() is not None:
            raise Conflict(f"{column.key}: '{value}' is already taken")


async def count_users(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(User))).scalar_one())


async def create_user(engine: AsyncEngine, fields: dict[str, Any]) -> dict[str, Any]:
    """Insert a user (`fields` holds `password_hash`, never the password)."""
    now = utcnow()
    row = {
        "id": new_id(),
        "enabled": True,
        "must_change_password": False,
        "mfa_enabled": False,
        "mfa_secret": None,
        "mfa_last_step": None,
        "created_at": now,
        "updated_at": now,
        "last_login": None,
        **fields,
    }
    try:
        async with engine.begin() as connection:
            await _taken(connection, row["username"], row["email"], None)
            await connection.execute(insert(User), [row])
    except IntegrityError as exc:  # a concurrent insert won the race
        raise Conflict("username or email is already taken") from exc
    return row


async def get_user(engine: AsyncEngine, user_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(User.__table__).where(User.id == user_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"user '{user_id}' not found")
    return dict(row)


async def find_user(engine: AsyncEngine, username_or_email: str) -> dict[str, Any] | None:
    """The user with this username (or, failing that, this email), case-insensitively."""
    value = username_or_email.strip().lower()
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(User.__table__).where(
                    or_(func.lower(User.username) == value, func.lower(User.email) == value)
                )
            )
        ).mappings()
        found = [dict(row) for row in rows]
    found.sort(key=lambda user: user["username"].lower() != value)
    return found[0] if found else None


async def list_users(
    engine: AsyncEngine, role: str | None, enabled: bool | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    query = select(User.__table__).order_by(User.created_at, User.id)
    if enabled is not None:
        query = query.where(User.enabled.is_(enabled))
    async with engine.connect() as connection:
        rows = [dict(row) for row in (await connection.execute(query)).mappings()]
    if role is not None:  # roles are a JSON list: filtered here, the same on every database
        rows = [row for row in rows if role in row["roles"]]
    return rows[offset : offset + limit], len(rows)


async def update_user(
    engine: AsyncEngine, user_id: str, fields: dict[str, Any], keep_session: str | None = None
) -> None:
    """Change a user. Disabling the user, or a new password, ends all of the user's
    sessions, except the one that issued access token `keep_session` (the caller's own,
    when users change their own password)."""
    if not fields:
        await get_user(engine, user_id)
        return
    try:
        async with engine.begin() as connection:
            await _taken(connection, fields.get("username"), fields.get("email"), user_id)
            result = await connection.execute(
                update(User).where(User.id == user_id).values(**fields, updated_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"user '{user_id}' not found")
            if fields.get("enabled") is False:
                await end_sessions_of(connection, user_id)
            elif "password_hash" in fields:
                await end_sessions_of(connection, user_id, keep_session)
    except IntegrityError as exc:
        raise Conflict("username or email is already taken") from exc


async def delete_user(engine: AsyncEngine, user_id: str) -> None:
    async with engine.begin() as connection:
        result = await connection.execute(delete(User).where(User.id == user_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"user '{user_id}' not found")


async def enabled_users_with_role(engine: AsyncEngine, role: str) -> list[str]:
    async with engine.connect() as connection:
        return [row.id for row in await enabled_with_role(connection, role)]


async def enabled_with_role(connection: AsyncConnection, role: str) -> list[Any]:
    """Rows (`id, username, roles`) of the enabled users holding `role`."""
    rows = await connection.execute(
        select(User.id, User.username, User.roles).where(User.enabled.is_(True))
    )
    return [row for row in rows if role in row.roles]


async def record_login(engine: AsyncEngine, user_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.id == user_id).values(last_login=utcnow()))


async def set_pending_mfa_secret(engine: AsyncEngine, user_id: str, secret: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(User)
            .where(User.id == user_id, User.mfa_enabled.is_(False))
            .values(mfa_secret=secret, mfa_last_step=None, updated_at=utcnow())
        )


async def seal_clear_totp_secrets(engine: AsyncEngine, seal: Callable[[str, str], str]) -> int:
    """Replace every TOTP secret still stored in clear (by a version before they were
    sealed) with `seal(user_id, secret)`, in one transaction; return how many."""
    async with engine.begin() as connection:
        rows = (
            await connection.execute(
                select(User.id, User.mfa_secret).where(
                    User.mfa_secret.is_not(None), User.mfa_secret.not_like(f"{SEALED}%")
                )
            )
        ).all()
        for row in rows:
            await connection.execute(
                update(User)
                .where(User.id == row.id, User.mfa_secret == row.mfa_secret)
                .values(mfa_secret=seal(row.id, row.mfa_secret))
            )
    return len(rows)


async def spend_totp_step(engine: AsyncEngine, user_id: str, step: int) -> bool:
    """Record `step` as used; False when it (or a later one) was already used."""
    async with engine.begin() as connection:
        result = await connection.execute(
            update(User)
            .where(
                User.id == user_id,
                or_(User.mfa_last_step.is_(None), User.mfa_last_step < step),
            )
            .values(mfa_last_step=step)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def spend_backup_code(engine: AsyncEngine, user_id: str, code_hash: str) -> bool:
    """Mark an unused backup code of the user used; False when there is none."""
    async with engine.begin() as connection:
        result = await connection.execute(
            update(MfaBackupCode)
            .where(
                MfaBackupCode.user_id == user_id,
                MfaBackupCode.code_hash == code_hash,
                MfaBackupCode.used_at.is_(None),
            )
            .values(used_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def activate_mfa(engine: AsyncEngine, user_id: str, backup_hashes: Sequence[str]) -> None:
    async with engine.begin() as connection:
        await connection.execute(update(User).where(User.id == user_id).values(mfa_enabled=True))
        await connection.execute(delete(MfaBackupCode).where(MfaBackupCode.user_id == user_id))
        await connection.execute(
            insert(MfaBackupCode),
            [
                {"id": new_id(), "user_id": user_id, "code_hash": h, "used_at": None}
                for h in backup_hashes
            ],
        )


async def disable_mfa(engine: AsyncEngine, user_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(User)
            .where(User.id == user_id)
            .values(mfa_enabled=False, mfa_secret=None, mfa_last_step=None, updated_at=utcnow())
        )
        await connection.execute(delete(MfaBackupCode).where(MfaBackupCode.user_id == user_id))
