"""Batch operations (seed 003): submit a batch as JSON or YAML, follow its operations."""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestrator.api.controllers import WorkflowStatus, orchestrator_of, security_of
from orchestrator.api.schemas import BatchOperationOut, BatchOut, Compensation, OperationResult
from orchestrator.api.security import user_of
from orchestrator.batch import Batch, plan_batch, storage_warnings
from orchestrator.errors import DomainError, InvalidInput, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.limits import REQUEST_BODY, YAML_TYPES, BadBody, BodyLimits, load_yaml
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.planner import TaskLimits
from orchestrator.records import Records
from orchestrator.resources import Catalog
from orchestrator.specs import WorkflowSpec

JSON_TYPES = ("application/json", "application/vnd.provisioning.v1+json", "")


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "UNSUPPORTED_MEDIA_TYPE"


def decode_batch(body: bytes, content_type: str, limits: BodyLimits) -> Batch:
    """JSON or YAML into a `Batch`; errors name the path (`$.operations[1].id`). The
    JSON's depth was checked with the request (`orchestrator.http.limits`)."""
    media = content_type.split(";")[0].strip().lower()
    if media in YAML_TYPES:
        raw = load_yaml(body, limits)
    elif media in JSON_TYPES:
        try:
            raw = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise BadBody(f"the request body could not be decoded: {exc}") from exc
    else:
        raise UnsupportedMediaType(
            f"content type '{media}' is not accepted; send application/json or application/yaml"
        )
    try:
        return msgspec.convert(raw, Batch)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid batch: {exc}") from exc


def prepare_batch(
    body: bytes,
    content_type: str,
    limits: BodyLimits,
    backend: str,
    catalog: Catalog,
    task_limits: TaskLimits,
) -> tuple[WorkflowSpec, list[str]]:
    """Decode, check and expand a batch: all of it CPU work, run off the event loop;
    with the warnings its submission answers with."""
    batch = decode_batch(body, content_type, limits)
    return plan_batch(batch, catalog, task_limits), storage_warnings(batch, backend)


def operation_status(statuses: list[str], compensated: bool) -> str:
    if compensated:
        return "RolledBack"
    if not statuses or all(s == "Pending" for s in statuses):
        return "Pending"
    if all(s == "Completed" for s in statuses):
        return "Completed"
    if "Running" in statuses or "Pending" in statuses:
        return "Running"
    if "Failed" in statuses:
        return "Failed"
    return "Cancelled"


def summarize(workflow: dict[str, Any], tasks: list[dict[str, Any]], *, results: bool) -> BatchOut:
    """A batch as seed 003 shows it: per operation, status, progress and results."""
    order = [op["id"] for op in (workflow["spec"] or {}).get("operations", [])]
    originals: dict[str, list[dict[str, Any]]] = defaultdict(list)
    undone: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for task in tasks:
        op = task["operation_id"] or ""
        if task["compensates"] is None:
            originals[op].append(task)
        else:
            earlier = undone[op].get(task["compensates"])
            if earlier is None or earlier["status"] != "Completed":
                undone[op][task["compensates"]] = task
    operations = []
    for op in order:
        mine = originals.get(op, [])
        statuses = [t["status"] for t in mine]
        done = [t for t in mine if t["status"] == "Completed"]
        compensated = bool(done) and all(
            undone[op].get(t["id"], {}).get("status") == "Completed" for t in done
        )
        ended = sum(1 for s in statuses if s in ("Completed", "Failed", "Cancelled"))
        out = BatchOperationOut(
            id=op,
            status=operation_status(statuses, compensated),
            progress=round(100.0 * ended / len(mine), 1) if mine else 0.0,
        )
        if results:
            out.results = {
                t["name"].split("/", 1)[-1]: OperationResult(
                    task_id=t["id"],
                    status=t["status"],
                    output=t["output"],
                    error=t["error"],
                    result=t["result"],
                    compensation=_compensation(undone[op].get(t["id"])),
                )
                for t in mine
            }
        operations.append(out)
    return BatchOut(
        batch_id=workflow["id"],
        status=workflow["status"],
        operations=operations,
        name=workflow["name"],
        created_at=workflow["created_at"],
        error=workflow["error"],
        check_mode=workflow["check_mode"],
        rollback_enabled=workflow["rollback_enabled"],
    )


def _compensation(task: dict[str, Any] | None) -> Compensation | None:
    if task is None:
        return None
    return Compensation(task_id=task["id"], status=task["status"], error=task["error"])


class BatchController(Controller):
    path = "/batch"
    tags = ["batch"]

    @post(
        "/execute",
        status_code=HTTP_202_ACCEPTED,
        summary="Execute a batch (JSON or YAML)",
        opt={REQUEST_BODY: (Batch, ("application/json", "application/yaml"))},
    )
    async def execute(
        self, state: State, request: Request[Any, Any, Any]
    ) -> Response[Envelope[BatchOut]]:
        orchestrator = orchestrator_of(state)
        settings = orchestrator.settings
        spec, warnings = await anyio.to_thread.run_sync(
            partial(
                prepare_batch,
                await request.body(),
                request.headers.get("content-type", ""),
                BodyLimits.of(settings.server),
                "sqlite" if settings.is_sqlite else "postgresql",
                orchestrator.catalog,
                TaskLimits.of(settings.server),
            )
        )
        items = orchestrator.catalog.items(spec)
        await security_of(request).authorize_items(request.scope, items)
        batch_id = await orchestrator.submit(spec, owner=user_of(request.scope))
        workflow = await orchestrator.records.workflow(batch_id)
        assert workflow is not None
        summary = summarize(
            workflow, await orchestrator.records.tasks_of([batch_id]), results=False
        )
        summary.warnings = warnings
        return Response(
            Envelope(summary),
            status_code=HTTP_202_ACCEPTED,
            headers={"Location": f"/batch/operations/{batch_id}"},
        )

    @get("/operations", summary="List batches")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: WorkflowStatus | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[BatchOut]]]:
        check_page(limit, offset)
        records = orchestrator_of(state).records
        rows, total = await records.workflows(
            status=status, kind="batch", limit=limit, offset=offset
        )
        tasks = await records.batch_tasks([r["id"] for r in rows])
        by_batch: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for task in tasks:
            by_batch[task["workflow_id"]].append(task)
        return Response(
            Envelope([summarize(r, by_batch[r["id"]], results=False) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/operations/{batch_id:str}", summary="A batch with per-operation status and results")
    async def show(self, state: State, batch_id: str) -> Envelope[BatchOut]:
        records = orchestrator_of(state).records
        workflow = await _batch(records, batch_id)
        return Envelope(summarize(workflow, await records.batch_tasks([batch_id]), results=True))

    @post("/operations/{batch_id:str}/cancel", status_code=200, summary="Cancel a batch")
    async def cancel(self, state: State, batch_id: str) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        workflow = await _batch(orchestrator.records, batch_id)
        if not await orchestrator.cancel(batch_id):
            return Envelope(f"Batch {batch_id} already ended ({workflow['status']})")
        return Envelope("Operation cancelled")


async def _batch(records: Records, batch_id: str) -> dict[str, Any]:
    workflow = await records.workflow(batch_id)
    if workflow is None or workflow["kind"] != "batch":
        raise NotFound(f"batch '{batch_id}' not found")
    return workflow
