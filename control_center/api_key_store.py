"""API keys in the database (seed 002): stored as SHA-256 digests with a short prefix
for display; the key itself exists only in the creation response."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from control_center.store.models import ApiKey
from control_center.tokens import API_KEY_SHOWN_CHARS, digest, new_api_key, utcnow
from orchestrator.errors import NotFound
from orchestrator.ids import new_id


async def create_api_key(
    engine: AsyncEngine, user_id: str, name: str, description: str, expires_at: datetime | None
) -> tuple[dict[str, Any], str]:
    """Store a new key for `user_id`; return its record and the key (shown once)."""
    key = new_api_key()
    row = {
        "id": new_id(),
        "user_id": user_id,
        "name": name,
        "description": description,
        "prefix": key[:API_KEY_SHOWN_CHARS],
        "key_hash": digest(key),
        "created_at": utcnow(),
        "expires_at": expires_at,
        "last_used": None,
        "revoked_at": None,
    }
    async with engine.begin() as connection:
        await connection.execute(insert(ApiKey), [row])
    return row, key


async def list_api_keys(
    engine: AsyncEngine, user_id: str, include_revoked: bool, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    conditions: list[Any] = [ApiKey.user_id == user_id]
    if not include_revoked:
        conditions.append(ApiKey.revoked_at.is_(None))
    async with engine.connect() as connection:
        total = await connection.execute(
            select(func.count()).select_from(ApiKey).where(*conditions)
        )
        rows = await connection.execute(
            select(ApiKey.__table__)
            .where(*conditions)
            .order_by(ApiKey.created_at, ApiKey.id)
            .limit(limit)
            .offset(offset)
        )
        return [dict(row) for row in rows.mappings()], int(total.scalar_one())


async def get_api_key(engine: AsyncEngine, key_id: str) -> dict[str, Any]:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(ApiKey.__table__).where(ApiKey.id == key_id)))
            .mappings()
            .first()
        )
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    return dict(row)


async def revoke_api_key(engine: AsyncEngine, key_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


async def find_by_key(engine: AsyncEngine, key: str) -> dict[str, Any] | None:
    """The record of the key (revoked or not), or None."""
    key_hash = digest(key)
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(ApiKey.__table__).where(ApiKey.key_hash == key_hash)))
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


async def touch(engine: AsyncEngine, key_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(last_used=utcnow())
        )
