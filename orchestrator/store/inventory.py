"""The inventory as the API reads it: pages of resource rows, and one row by its id.

Rows are written by the tasks that change them (`journal.write_resource`); this module
only reads them, by whatever kind and provider instance the caller names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.models import Resource, Workflow


async def inventory_rows(
    engine: AsyncEngine, *, kind: str | None, provider: str | None
) -> list[dict[str, Any]]:
    """Every row of this kind and provider instance, by instance, kind and name, each
    with `owner`: the user its record names, else the user whose workflow last wrote it
    (the API shows each caller the rows its policies let it read, so it pages them)."""
    conditions = []
    if kind is not None:
        conditions.append(Resource.kind == kind)
    if provider is not None:
        conditions.append(Resource.provider == provider)
    query = (
        select(Resource.__table__, Workflow.owner.label("workflow_owner"))
        .outerjoin(Workflow, Workflow.id == Resource.workflow_id)
        .where(*conditions)
        .order_by(Resource.provider, Resource.kind, Resource.name)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings()
        return [_with_owner(dict(row)) for row in rows]


def _with_owner(row: dict[str, Any]) -> dict[str, Any]:
    recorded = (row.get("data") or {}).get("owner")
    row["owner"] = recorded if isinstance(recorded, str) and recorded else row["workflow_owner"]
    del row["workflow_owner"]
    return row


async def inventory_row(engine: AsyncEngine, resource_id: str) -> dict[str, Any] | None:
    query = (
        select(Resource.__table__, Workflow.owner.label("workflow_owner"))
        .outerjoin(Workflow, Workflow.id == Resource.workflow_id)
        .where(Resource.id == resource_id)
    )
    async with engine.connect() as connection:
        row = (await connection.execute(query)).mappings().first()
    return None if row is None else _with_owner(dict(row))
