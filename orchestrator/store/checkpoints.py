"""Checkpoints: created, read, deleted, and the inventory restored from one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.clock import utcnow
from orchestrator.errors import Conflict, NotFound
from orchestrator.ids import new_id
from orchestrator.store.journal import write_events
from orchestrator.store.models import Checkpoint, Event, Resource, Workflow
from orchestrator.store.rollbacks import completed_since
from orchestrator.store.workflows import ACTIVE_WORKFLOW_STATUSES

if TYPE_CHECKING:
    from orchestrator.store.outbox import Outbox

_RESOURCE_FIELDS = ("id", "provider", "kind", "name", "status", "workflow_id", "task_id", "data")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def create_checkpoint(
    engine: AsyncEngine, name: str, description: str, outbox: Outbox | None = None
) -> dict[str, Any]:
    """Record the event position, the inventory and workflow states, atomically."""
    async with engine.begin() as connection:
        seq = int((await connection.execute(select(func.max(Event.seq)))).scalar() or 0)
        resources = (await connection.execute(select(Resource.__table__))).mappings().all()
        inventory = [
            {
                **{k: r[k] for k in _RESOURCE_FIELDS},
                "created_at": _iso(r["created_at"]),
                "updated_at": _iso(r["updated_at"]),
            }
            for r in resources
        ]
        workflows = [
            {"id": w, "kind": k, "status": s}
            for w, k, s in await connection.execute(
                select(Workflow.id, Workflow.kind, Workflow.status)
            )
        ]
        size = len(json.dumps({"inventory": inventory, "workflows": workflows}))
        row = {
            "id": new_id(),
            "name": name,
            "description": description,
            "seq": seq,
            "created_at": utcnow(),
            "inventory": inventory,
            "workflows": workflows,
            "size": size,
        }
        await connection.execute(insert(Checkpoint), [row])
        created = {
            "at": row["created_at"],
            "type": "CheckpointCreated",
            "workflow_id": None,
            "task_id": None,
            "data": {"checkpoint_id": row["id"], "name": name, "seq": seq},
        }
        await connection.run_sync(write_events, [created], outbox)
    return row


async def get_checkpoint(engine: AsyncEngine, checkpoint_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            (
                await connection.execute(
                    select(Checkpoint.__table__).where(Checkpoint.id == checkpoint_id)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            return None
        checkpoint = dict(row)
        checkpoint["operations_count"] = await completed_since(connection, checkpoint["created_at"])
    return checkpoint


async def list_checkpoints(
    engine: AsyncEngine, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    async with engine.connect() as connection:
        total = (
            await connection.execute(select(func.count()).select_from(Checkpoint))
        ).scalar_one()
        rows = (
            await connection.execute(
                select(
                    Checkpoint.id,
                    Checkpoint.name,
                    Checkpoint.description,
                    Checkpoint.created_at,
                    Checkpoint.size,
                    Checkpoint.seq,
                )
                .order_by(Checkpoint.created_at.desc())
                .limit(limit)
                .offset(offset)
            )
        ).mappings()
        return [dict(r) for r in rows], int(total)


async def delete_checkpoint(
    engine: AsyncEngine, checkpoint_id: str, outbox: Outbox | None = None
) -> dict[str, Any]:
    """Forget a checkpoint (`NotFound` if there is none): nothing can roll back or be
    restored to it any more, and retention no longer keeps the workflows that ended
    after it for its sake (`store/retention.py`). Returns what it was."""
    async with engine.begin() as connection:
        row = (
            (
                await connection.execute(
                    delete(Checkpoint)
                    .where(Checkpoint.id == checkpoint_id)
                    .returning(Checkpoint.id, Checkpoint.name, Checkpoint.seq)
                )
            )
            .mappings()
            .first()
        )
        if row is None:
            raise NotFound(f"checkpoint '{checkpoint_id}' not found")
        deleted = {
            "at": utcnow(),
            "type": "CheckpointDeleted",
            "workflow_id": None,
            "task_id": None,
            "data": {"checkpoint_id": row["id"], "name": row["name"], "seq": row["seq"]},
        }
        await connection.run_sync(write_events, [deleted], outbox)
    return dict(row)


async def restore_inventory(
    engine: AsyncEngine, checkpoint: dict[str, Any], outbox: Outbox | None = None
) -> int:
    """Reset the recorded inventory to the checkpoint's; the infrastructure is untouched."""
    async with engine.begin() as connection:
        active = (
            await connection.execute(
                select(func.count())
                .select_from(Workflow)
                .where(Workflow.status.in_(ACTIVE_WORKFLOW_STATUSES))
            )
        ).scalar_one()
        if active:
            raise Conflict(
                f"{active} workflow(s) still running; wait for them or cancel them, then restore"
            )
        await connection.execute(delete(Resource))
        rows = [
            {
                **{k: r[k] for k in _RESOURCE_FIELDS},
                "created_at": datetime.fromisoformat(r["created_at"]),
                "updated_at": utcnow(),
            }
            for r in checkpoint["inventory"]
        ]
        if rows:
            await connection.execute(insert(Resource), rows)
        restored = {
            "at": utcnow(),
            "type": "StateRestored",
            "workflow_id": None,
            "task_id": None,
            "data": {"checkpoint_id": checkpoint["id"], "resources": len(rows)},
        }
        await connection.run_sync(write_events, [restored], outbox)
    return len(rows)
