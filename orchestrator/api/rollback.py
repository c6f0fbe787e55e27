"""Checkpoints and rollback (seed 003). A rollback is a workflow of compensation tasks:
visible in `/tasks`, resumable after a crash."""

from __future__ import annotations

import itertools
import time
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED

from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.schemas import (
    UNDO_SHOWN,
    CheckpointIn,
    CheckpointOut,
    RollbackBody,
    RollbackOut,
    RollbackStatistics,
)
from orchestrator.api.security import user_of
from orchestrator.api.state import human_bytes
from orchestrator.errors import Conflict, InvalidInput, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.rules import plan_compensations
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec


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
    row = await orchestrator.records.checkpoint(checkpoint_id)
    if row is None:
        raise NotFound(f"checkpoint '{checkpoint_id}' not found")
    return row


class RollbackController(Controller):
    path = "/rollback"
    tags = ["rollback"]

    @post("/checkpoints", status_code=HTTP_201_CREATED, summary="Create a checkpoint")
    async def create(self, state: State, data: CheckpointIn) -> Envelope[str]:
        checkpoint_id = await orchestrator_of(state).create_checkpoint(data.name, data.description)
        return Envelope(checkpoint_id)

    @get("/checkpoints", summary="List checkpoints, newest first")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[CheckpointOut]]]:
        check_page(limit, offset)
        rows, total = await orchestrator_of(state).records.checkpoints(limit, offset)
        return Response(
            Envelope([_checkpoint_out(r) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get(
        "/checkpoints/{checkpoint_id:str}",
        summary="A checkpoint",
        description="With what a rollback to it would undo now: `undo`, the compensation "
        "tasks it would run in their order, or `undo_blocked`, why it cannot run now.",
    )
    async def show(self, state: State, checkpoint_id: str) -> Envelope[CheckpointOut]:
        orchestrator = orchestrator_of(state)
        row = await _checkpoint(orchestrator, checkpoint_id)
        out = _checkpoint_out(row)
        try:
            done = await orchestrator.records.undoable(since=row["created_at"])
        except Conflict as exc:  # (RollbackInProgress too): the detail says so
            out.undo_blocked = exc.message
        else:
            # Newest first: an order the compensations may run in (dependents first).
            specs = reversed(plan_compensations(done))
            out.undo = [spec.name for spec in itertools.islice(specs, UNDO_SHOWN)]
        return Envelope(out)

    @delete(
        "/checkpoints/{checkpoint_id:str}",
        status_code=200,
        summary="Delete a checkpoint",
        description="Nothing can roll back or be restored to it any more; retention no "
        "longer keeps, for its sake, the workflows that ended after it.",
    )
    async def remove(self, state: State, checkpoint_id: str) -> Envelope[str]:
        await orchestrator_of(state).delete_checkpoint(checkpoint_id)
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
            done = await orchestrator.records.undoable(since=checkpoint["created_at"])
            name = f"rollback to checkpoint {checkpoint['name']}"
        else:
            if not data.operation_ids:
                raise InvalidInput("operation_ids: name at least one operation")
            done = await orchestrator.records.undoable(operation_ids=data.operation_ids)
            name = f"rollback of {', '.join(data.operation_ids)}"
        if not done:  # a run all the same: its id reads back (GET /workflows/{id})
            empty = await orchestrator.record_empty_rollback(name, msgspec.to_builtins(data))
            duration = round(time.monotonic() - started, 3)
            return Envelope(RollbackOut(empty, True, 0, 0, duration, "Completed"))
        spec = WorkflowSpec(
            kind="rollback",
            name=name,
            tasks=plan_compensations(done),
            request=msgspec.to_builtins(data),
        )
        # Undo commands run on this host too: the same permission as running them.
        items = orchestrator.catalog.host_items(spec)
        await security_of(request).authorize_items(request.scope, items)
        rollback_id = await orchestrator.submit(spec, owner=user_of(request.scope))
        if data.wait:
            await orchestrator.wait(rollback_id, orchestrator.settings.server.wait_timeout)
        return Envelope(await _rollback_result(orchestrator, rollback_id, started))

    @post("/restore/{checkpoint_id:str}", status_code=200, summary="Restore recorded state")
    async def restore(self, state: State, checkpoint_id: str) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        checkpoint = await _checkpoint(orchestrator, checkpoint_id)
        await orchestrator.restore_checkpoint(checkpoint)
        return Envelope(f"State restored from checkpoint {checkpoint_id}")

    @get("/statistics", summary="Rollback statistics")
    async def statistics(self, state: State) -> Envelope[RollbackStatistics]:
        records = orchestrator_of(state).records
        runs = await records.durations(kind="rollback")
        automatic = await records.rolled_back_workflows()
        total = len(runs) + automatic
        succeeded = sum(1 for r in runs if r["status"] == "Completed") + automatic
        return Envelope(
            RollbackStatistics(
                total_checkpoints=await records.checkpoint_count(),
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
    workflow = await orchestrator.records.workflow(rollback_id)
    assert workflow is not None
    tasks = await orchestrator.records.tasks_of([rollback_id])
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
