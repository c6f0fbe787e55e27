"""API keys: stored as SHA-256 digests with a short prefix for display. The key itself
is made by the caller (`control_center.api_keys`) and never reaches the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from control_center.store.models import ApiKey as ApiKeyRow
from control_center.store.records import ApiKey, NewApiKey
from orchestrator.clock import utcnow
from orchestrator.errors import NotFound
from orchestrator.ids import new_id


def _api_key_of(row: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        description=row["description"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used=row["last_used"],
        revoked_at=row["revoked_at"],
    )


async def create_api_key(engine: AsyncEngine, new: NewApiKey) -> ApiKey:
    row = {
        "id": new_id(),
        "user_id": new.user_id,
        "name": new.name,
        "description": new.description,
        "prefix": new.prefix,
        "key_hash": new.key_hash,
        "created_at": utcnow(),
        "expires_at": new.expires_at,
        "last_used": None,
        "revoked_at": None,
    }
    async with engine.begin() as connection:
        await connection.execute(insert(ApiKeyRow), [row])
    return _api_key_of(row)


async def list_api_keys(
    engine: AsyncEngine, user_id: str, include_revoked: bool, limit: int, offset: int
) -> tuple[list[ApiKey], int]:
    """A page of the user's keys, oldest first, and how many there are in all."""
    conditions: list[Any] = [ApiKeyRow.user_id == user_id]
    if not include_revoked:
        conditions.append(ApiKeyRow.revoked_at.is_(None))
    async with engine.connect() as connection:
        total = await connection.execute(
            select(func.count()).select_from(ApiKeyRow).where(*conditions)
        )
        rows = await connection.execute(
            select(ApiKeyRow.__table__)
            .where(*conditions)
            .order_by(ApiKeyRow.created_at, ApiKeyRow.id)
            .limit(limit)
            .offset(offset)
        )
        return [_api_key_of(row) for row in rows.mappings()], int(total.scalar_one())


async def get_api_key(engine: AsyncEngine, key_id: str) -> ApiKey:
    async with engine.connect() as connection:
        found = await connection.execute(select(ApiKeyRow.__table__).where(ApiKeyRow.id == key_id))
        row = found.mappings().first()
    if row is None:
        raise NotFound(f"API key '{key_id}' not found")
    return _api_key_of(row)


async def revoke_api_key(engine: AsyncEngine, key_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.id == key_id, ApiKeyRow.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )


async def find_api_key(engine: AsyncEngine, key_hash: str) -> ApiKey | None:
    """The key with this digest (revoked or not), or None."""
    async with engine.connect() as connection:
        found = await connection.execute(
            select(ApiKeyRow.__table__).where(ApiKeyRow.key_hash == key_hash)
        )
        row = found.mappings().first()
    return None if row is None else _api_key_of(row)


async def touch(engine: AsyncEngine, key_id: str) -> None:
    """Note that the key was just used."""
    async with engine.begin() as connection:
        await connection.execute(
            update(ApiKeyRow).where(ApiKeyRow.id == key_id).values(last_used=utcnow())
        )
