"""Counts and durations read from the store for the state and rollback endpoints."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.models import Checkpoint, Task, Workflow


async def workflow_counts(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Workflow.status, func.count()).group_by(Workflow.status)
        )
        return Counter({status: int(n) for status, n in rows})


async def durations(engine: AsyncEngine, *, kind: str | None = None) -> list[dict[str, Any]]:
    """Finished workflows with their status and duration in seconds."""
    query = select(
        Workflow.kind, Workflow.status, Workflow.started_at, Workflow.completed_at
    ).where(Workflow.completed_at.is_not(None), Workflow.started_at.is_not(None))
    if kind is not None:
        query = query.where(Workflow.kind == kind)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).mappings().all()
    return [
        {
            "kind": r["kind"],
            "status": r["status"],
            "seconds": (r["completed_at"] - r["started_at"]).total_seconds(),
        }
        for r in rows
    ]


async def rolled_back_workflows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(Workflow).where(Workflow.status == "RolledBack")
        return int((await connection.execute(query)).scalar_one())


async def checkpoint_count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(Checkpoint))).scalar_one()
        )


async def task_timings(engine: AsyncEngine, workflow_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Task.name, Task.status, Task.started_at, Task.completed_at, Task.compensates)
            .where(Task.workflow_id == workflow_id)
            .order_by(Task.position)
        )
        return [dict(r) for r in rows.mappings()]


async def database_bytes(engine: AsyncEngine) -> int:
    """The store's size on disk (SQLite pages, or PostgreSQL's database size)."""
    async with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            pages = (await connection.execute(text("PRAGMA page_count"))).scalar_one()
            size = (await connection.execute(text("PRAGMA page_size"))).scalar_one()
            return int(pages) * int(size)
        query = text("SELECT pg_database_size(current_database())")
        return int((await connection.execute(query)).scalar_one())
