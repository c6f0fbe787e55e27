"""The inventory as the API reads it: pages of resource rows, and one row by its id.

Rows are written by the tasks that change them (`journal.write_resource`); this module
only reads them, by whatever kind and provider instance the caller names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.models import Resource


async def inventory_page(
    engine: AsyncEngine, *, kind: str | None, provider: str | None, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """Rows by provider instance, kind and name, with how many match in all."""
    conditions = []
    if kind is not None:
        conditions.append(Resource.kind == kind)
    if provider is not None:
        conditions.append(Resource.provider == provider)
    async with engine.connect() as connection:
        total = (
            await connection.execute(select(func.count()).select_from(Resource).where(*conditions))
        ).scalar_one()
        rows = (
            await connection.execute(
                select(Resource.__table__)
                .where(*conditions)
                .order_by(Resource.provider, Resource.kind, Resource.name)
                .limit(limit)
                .offset(offset)
            )
        ).mappings()
        return [dict(row) for row in rows], int(total)


async def inventory_row(engine: AsyncEngine, resource_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (await connection.execute(select(Resource.__table__).where(Resource.id == resource_id)))
            .mappings()
            .first()
        )
    return None if row is None else dict(row)
