"""Checkpoints and rollback (seed 003). A rollback is a workflow of compensation tasks:
visible in `/tasks`, resumable after a crash."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED

from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.envelope import Envelope
from orchestrator.api.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.api.state import human_bytes
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.fields import Id, Identifier, Name, Text
from orchestrator.rollback import plan_compensations
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec
from orchestrator.store.checkpoints import (
    create_checkpoint,
    delete_checkpoint,
    get_checkpoint,
    list_checkpoints,
    restore_inventory,
)
from orchestrator.store.rollbacks import undoable_tasks
from orchestrator.store.statistics import checkpoint_count, durations, rolled_back_workflows
from orchestrator.store.workflows import get_workflow, tasks_of


class CheckpointIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    description: Text = ""


class CheckpointOut(msgspec.Struct, omit_defaults=True):
    id: str
    name: str
    description: str
    created_at: datetime
    size: str
    seq: int
    operations_count: int | None = None
    resources: int | None = None


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True):
    """Exactly one of `checkpoint_id` and `operation_ids` (the schema says so too)."""

    checkpoint_id: Id | None = None
    operation_ids: Annotated[list[Identifier], msgspec.Meta(min_length=1)] | None = None
    wait: bool = True


#: How the published schema states "exactly one of", which `execute` enforces.
EXACTLY_ONE = {
    "oneOf": [
        {
            "required": ["checkpoint_id"],
            "properties": {"checkpoint_id": {"type": "string"}, "operation_ids": {"type": "null"}},
        },
        {
            "required": ["operation_ids"],
            "properties": {"operation_ids": {"type": "array"}, "checkpoint_id": {"type": "null"}},
        },
    ]
}
RollbackBody = Annotated[RollbackIn, msgspec.Meta(extra_json_schema=EXACTLY_ONE)]


class RollbackOut(msgspec.Struct):
    rollback_id: str | None
    success: bool | None
    operations_executed: int
    operations_failed: int
    duration: float
    status: str


class RollbackStatistics(msgspec.Struct):
    total_checkpoints: int
    total_rollbacks: int
    success_rate: float | None
    average_rollback_time: float | None


def _checkpoint_out(row: dict[str, Any]) -> CheckpointOut:
    return CheckpointOut(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        created_at=row["created_at"],
        size=human_bytes(row["size"]),
        seq=row["seq"],
        operations_count=row.get("operations_count"),
        resources=len(row["inventory"]) if "inventory" in row else None,
    )


async def _checkpoint(orchestrator: Orchestrator, checkpoint_id: str) -> dict[str, Any]:
    row = await get_checkpoint(orchestrator.engine, checkpoint_id)
    if row is None:
        raise NotFound(f"checkpoint '{checkpoint_id}' not found")
    return row


class RollbackController(Controller):
    path = "/rollback"
    tags = ["rollback"]

    @post("/checkpoints", status_code=HTTP_201_CREATED, summary="Create a checkpoint")
    async def create(self, state: State, data: CheckpointIn) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        row = await create_checkpoint(
            orchestrator.engine, data.name, data.description, orchestrator.outbox
        )
        orchestrator.committed()
        return Envelope(row["id"])

    @get("/checkpoints", summary="List checkpoints, newest first")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[CheckpointOut]]]:
        check_page(limit, offset)
        rows, total = await list_checkpoints(orchestrator_of(state).engine, limit, offset)
        return Response(
            Envelope([_checkpoint_out(r) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/checkpoints/{checkpoint_id:str}", summary="A checkpoint")
    async def show(self, state: State, checkpoint_id: str) -> Envelope[CheckpointOut]:
        row = await _checkpoint(orchestrator_of(state), checkpoint_id)
        return Envelope(_checkpoint_out(row))

    @delete(
        "/checkpoints/{checkpoint_id:str}",
        status_code=200,
        summary="Delete a checkpoint",
        description="Nothing can roll back or be restored to it any more; retention no "
        "longer keeps, for its sake, the workflows that ended after it.",
    )
    async def remove(self, state: State, checkpoint_id: str) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        await delete_checkpoint(orchestrator.engine, checkpoint_id, orchestrator.outbox)
        orchestrator.committed()
        return Envelope(f"Checkpoint {checkpoint_id} deleted")

    @post("/execute", status_code=200, summary="Undo work since a checkpoint, or operations")
    async def execute(
        self, state: State, request: Request[Any, Any, Any], data: RollbackBody
    ) -> Envelope[RollbackOut]:
        orchestrator = orchestrator_of(state)
        if (data.checkpoint_id is None) == (data.operation_ids is None):
            raise InvalidInput("give exactly one of checkpoint_id or operation_ids")
        started = time.monotonic()
        # Any process may roll back at once: the store refuses, in the transaction that
        # stores the rollback, work another rollback is undoing (`store/rollbacks.py`).
        if data.checkpoint_id is not None:
            checkpoint = await _checkpoint(orchestrator, data.checkpoint_id)
            done = await undoable_tasks(orchestrator.engine, since=checkpoint["created_at"])
            name = f"rollback to checkpoint {checkpoint['name']}"
        else:
            if not data.operation_ids:
                raise InvalidInput("operation_ids: name at least one operation")
            done = await undoable_tasks(orchestrator.engine, operation_ids=data.operation_ids)
            name = f"rollback of {', '.join(data.operation_ids)}"
        if not done:
            return Envelope(RollbackOut(None, True, 0, 0, 0.0, "Completed"))
        spec = WorkflowSpec(
            kind="rollback",
            name=name,
            tasks=plan_compensations(done),
            request=msgspec.to_builtins(data),
        )
        # Undo commands run on this host too: the same permission as running them.
        items = orchestrator.catalog.host_items(spec)
        await security_of(request).authorize_items(request.scope, items)
        rollback_id = await orchestrator.submit(spec)
        if data.wait:
            await orchestrator.wait(rollback_id, orchestrator.settings.server.wait_timeout)
        return Envelope(await _rollback_result(orchestrator, rollback_id, started))

    @post("/restore/{checkpoint_id:str}", status_code=200, summary="Restore recorded state")
    async def restore(self, state: State, checkpoint_id: str) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        checkpoint = await _checkpoint(orchestrator, checkpoint_id)
        await restore_inventory(orchestrator.engine, checkpoint, orchestrator.outbox)
        orchestrator.committed()
        return Envelope(f"State restored from checkpoint {checkpoint_id}")

    @get("/statistics", summary="Rollback statistics")
    async def statistics(self, state: State) -> Envelope[RollbackStatistics]:
        engine = orchestrator_of(state).engine
        runs = await durations(engine, kind="rollback")
        automatic = await rolled_back_workflows(engine)
        total = len(runs) + automatic
        succeeded = sum(1 for r in runs if r["status"] == "Completed") + automatic
        return Envelope(
            RollbackStatistics(
                total_checkpoints=await checkpoint_count(engine),
                total_rollbacks=total,
                success_rate=round(100.0 * succeeded / total, 1) if total else None,
                average_rollback_time=(
                    round(sum(r["seconds"] for r in runs) / len(runs), 3) if runs else None
                ),
            )
        )


async def _rollback_result(
    orchestrator: Orchestrator, rollback_id: str, started: float
) -> RollbackOut:
    workflow = await get_workflow(orchestrator.engine, rollback_id)
    assert workflow is not None
    tasks = await tasks_of(orchestrator.engine, [rollback_id])
    executed = sum(1 for t in tasks if t["status"] == "Completed")
    failed = sum(1 for t in tasks if t["status"] in ("Failed", "Cancelled"))
    finished = workflow["status"] not in ("Pending", "Running")
    return RollbackOut(
        rollback_id=rollback_id,
        success=(workflow["status"] == "Completed") if finished else None,
        operations_executed=executed,
        operations_failed=failed,
        duration=round(time.monotonic() - started, 3),
        status=workflow["status"],
    )
