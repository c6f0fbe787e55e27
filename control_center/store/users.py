"""Users and their MFA state: every query on `users` and `mfa_backup_codes`.

Disabling a user, or giving a new password, ends the user's sessions in the same
transaction (the `refresh_tokens` rows are revoked).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_center.store.models import MfaBackupCode, RefreshToken
from control_center.store.models import User as UserRow
from control_center.store.records import NewUser, User, UserChanges
from orchestrator.clock import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.ids import new_id


def user_of(row: Mapping[Any, Any]) -> User:
    return User(
        id=row["id"],
        username=row["username"],
        email=row["email"],
        password_hash=row["password_hash"],
        roles=tuple(str(role) for role in row["roles"]),
        enabled=row["enabled"],
        must_change_password=row["must_change_password"],
        mfa_enabled=row["mfa_enabled"],
        mfa_secret=row["mfa_secret"],
        mfa_last_step=row["mfa_last_step"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_login=row["last_login"],
    )


async def _taken(
    connection: AsyncConnection, username: str | None, email: str | None, other_than: str | None
) -> None:
    # A username is also checked against the emails and an email against the usernames:
    # login takes either, and a username spelled as someone's email would stand in for
    # that person at login and at forgot-password.
    for column, value in ((UserRow.username, username), (UserRow.email, email)):
        if value is None:
            continue
        query = select(UserRow.id).where(
            or_(
                func.lower(UserRow.username) == value.lower(),
                func.lower(UserRow.email) == value.lower(),
            )
        )
        if other_than is not None:
            query = query.where(UserRow.id != other_than)
        if (await connection.execute(query)).first() is not None:
            raise Conflict(f"{column.key}: '{value}' is already taken")


async def count_users(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        total = await connection.execute(select(func.count()).select_from(UserRow))
        return int(total.scalar_one())


async def create_user(engine: AsyncEngine, new: NewUser) -> User:
    now = utcnow()
    row = {
        "id": new_id(),
        "username": new.username,
        "email": new.email,
        "password_hash": new.password_hash,
        "roles": list(new.roles),
        "enabled": new.enabled,
        "must_change_password": new.must_change_password,
        "mfa_enabled": False,
        "mfa_secret": None,
        "mfa_last_step": None,
        "created_at": now,
        "updated_at": now,
        "last_login": None,
    }
    try:
        async with engine.begin() as connection:
            await _taken(connection, new.username, new.email, None)
            await connection.execute(insert(UserRow), [row])
    except IntegrityError as exc:  # a concurrent insert won the race
        raise Conflict("username or email is already taken") from exc
    return user_of(row)


async def get_user(engine: AsyncEngine, user_id: str) -> User:
    async with engine.connect() as connection:
        found = await connection.execute(select(UserRow.__table__).where(UserRow.id == user_id))
        row = found.mappings().first()
    if row is None:
        raise NotFound(f"user '{user_id}' not found")
    return user_of(row)


async def find_user(engine: AsyncEngine, username_or_email: str) -> User | None:
    """The user with this username (or, failing that, this email), case-insensitively."""
    value = username_or_email.strip().lower()
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(UserRow.__table__).where(
                or_(func.lower(UserRow.username) == value, func.lower(UserRow.email) == value)
            )
        )
        found = [user_of(row) for row in rows.mappings()]
    found.sort(key=lambda user: user.username.lower() != value)
    return found[0] if found else None


async def find_by_email(engine: AsyncEngine, email: str) -> User | None:
    """The user with this email, case-insensitively (never by username)."""
    async with engine.connect() as connection:
        row = (
            (
                await connection.execute(
                    select(UserRow.__table__).where(
                        func.lower(UserRow.email) == email.strip().lower()
                    )
                )
            )
            .mappings()
            .first()
        )
    return None if row is None else user_of(row)


async def list_users(
    engine: AsyncEngine, role: str | None, enabled: bool | None, limit: int, offset: int
) -> tuple[list[User], int]:
    query = select(UserRow.__table__).order_by(UserRow.created_at, UserRow.id)
    if enabled is not None:
        query = query.where(UserRow.enabled.is_(enabled))
    async with engine.connect() as connection:
        users = [user_of(row) for row in (await connection.execute(query)).mappings()]
    if role is not None:  # roles are a JSON list: filtered here, the same on every database
        users = [user for user in users if role in user.roles]
    return users[offset : offset + limit], len(users)


async def update_user(
    engine: AsyncEngine, user_id: str, changes: UserChanges, keep_session: str | None = None
) -> None:
    """Change a user. Disabling the user, or a new password, ends all of the user's
    sessions, except the one that issued access token `keep_session` (the caller's own,
    when users change their own password)."""
    values: dict[str, Any] = {name: getattr(changes, name) for name in changes.given()}
    if not values:
        await get_user(engine, user_id)
        return
    if changes.roles is not None:
        values["roles"] = list(changes.roles)
    try:
        async with engine.begin() as connection:
            await _taken(connection, changes.username, changes.email, user_id)
            result = await connection.execute(
                update(UserRow).where(UserRow.id == user_id).values(**values, updated_at=utcnow())
            )
            if result.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"user '{user_id}' not found")
            if changes.enabled is False:
                await _end_sessions(connection, user_id)
            elif changes.password_hash is not None:
                await _end_sessions(connection, user_id, keep_session)
    except IntegrityError as exc:
        raise Conflict("username or email is already taken") from exc


async def replace_password(
    engine: AsyncEngine, user_id: str, expected_hash: str, new_hash: str
) -> bool:
    """Set the password of `user_id` if it is still `expected_hash` (a reset token is
    spent once, also by two resets at the same moment), clear `must_change_password`,
    and end every session of the user; False when the password had changed."""
    async with engine.begin() as connection:
        result = await connection.execute(
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.password_hash == expected_hash)
            .values(password_hash=new_hash, must_change_password=False, updated_at=utcnow())
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            return False
        await _end_sessions(connection, user_id)
    return True


async def _end_sessions(
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


async def delete_user(engine: AsyncEngine, user_id: str) -> None:
    async with engine.begin() as connection:
        result = await connection.execute(delete(UserRow).where(UserRow.id == user_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"user '{user_id}' not found")


async def enabled_users_with_role(engine: AsyncEngine, role: str) -> list[str]:
    """The ids of the enabled users holding `role`."""
    async with engine.connect() as connection:
        return [user.id for user in await enabled_with_role(connection, role)]


async def enabled_with_role(connection: AsyncConnection, role: str) -> list[User]:
    """The enabled users holding `role`, as `connection`'s transaction sees them."""
    rows = await connection.execute(select(UserRow.__table__).where(UserRow.enabled.is_(True)))
    return [user for user in map(user_of, rows.mappings()) if role in user.roles]


async def record_login(engine: AsyncEngine, user_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(UserRow).where(UserRow.id == user_id).values(last_login=utcnow())
        )


async def set_pending_mfa_secret(engine: AsyncEngine, user_id: str, sealed: str) -> None:
    """Keep `sealed` as the secret awaiting verification (unless MFA is already on)."""
    async with engine.begin() as connection:
        await connection.execute(
            update(UserRow)
            .where(UserRow.id == user_id, UserRow.mfa_enabled.is_(False))
            .values(mfa_secret=sealed, mfa_last_step=None, updated_at=utcnow())
        )


async def seal_clear_totp_secrets(
    engine: AsyncEngine, sealed_prefix: str, seal: Callable[[str, str], str]
) -> int:
    """Replace every TOTP secret not starting with `sealed_prefix` (stored in clear by a
    version before they were sealed) with `seal(user_id, secret)`, in one transaction;
    return how many."""
    async with engine.begin() as connection:
        rows = (
            await connection.execute(
                select(UserRow.id, UserRow.mfa_secret).where(
                    UserRow.mfa_secret.is_not(None),
                    UserRow.mfa_secret.not_like(f"{sealed_prefix}%"),
                )
            )
        ).all()
        for row in rows:
            await connection.execute(
                update(UserRow)
                .where(UserRow.id == row.id, UserRow.mfa_secret == row.mfa_secret)
                .values(mfa_secret=seal(row.id, row.mfa_secret))
            )
    return len(rows)


async def spend_totp_step(engine: AsyncEngine, user_id: str, step: int) -> bool:
    """Record `step` as used; False when it (or a later one) was already used."""
    async with engine.begin() as connection:
        result = await connection.execute(
            update(UserRow)
            .where(
                UserRow.id == user_id,
                or_(UserRow.mfa_last_step.is_(None), UserRow.mfa_last_step < step),
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
    """Turn MFA on with the pending secret, and replace the backup codes."""
    async with engine.begin() as connection:
        await connection.execute(
            update(UserRow).where(UserRow.id == user_id).values(mfa_enabled=True)
        )
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
            update(UserRow)
            .where(UserRow.id == user_id)
            .values(mfa_enabled=False, mfa_secret=None, mfa_last_step=None, updated_at=utcnow())
        )
        await connection.execute(delete(MfaBackupCode).where(MfaBackupCode.user_id == user_id))
