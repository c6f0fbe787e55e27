"""Health, tasks and workflow submission (seed 003), plus explicit-graph workflows, and
the one mapping from stored task, workflow and event rows to the API's types."""

from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestrator.api.redaction import redact, redact_args, redact_text
from orchestrator.api.schemas import (
    ClusterCreate,
    EventOut,
    ServersCreate,
    TaskOut,
    TaskservCreate,
    WorkflowIn,
    WorkflowOut,
)
from orchestrator.api.security import Security, user_of
from orchestrator.errors import Conflict, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.plan import Plan, inventory_index, workflow_plan
from orchestrator.planner import (
    TaskLimits,
    check_operation,
    plan_cluster,
    plan_servers,
    plan_taskserv,
)
from orchestrator.service import Orchestrator
from orchestrator.specs import WorkflowSpec
from orchestrator.store.events import LoggedEvent
from orchestrator.workspace import load_infra

TaskStatus = Literal["Pending", "Running", "Completed", "Failed", "Cancelled"]
WorkflowStatus = Literal[
    "Pending", "Running", "Completed", "Failed", "Cancelled", "RollingBack", "RolledBack"
]


def security_of(request: Request[Any, Any, Any]) -> Security:
    security: Security = request.app.state.security
    return security


def orchestrator_of(state: State) -> Orchestrator:
    orchestrator: Orchestrator = state.orchestrator
    return orchestrator


async def submit(
    orchestrator: Orchestrator, request: Request[Any, Any, Any], spec: WorkflowSpec, wait: bool
) -> Response[Envelope[str]]:
    TaskLimits.of(orchestrator.settings.server).check_workflow(len(spec.tasks))
    items = orchestrator.catalog.items(spec)
    await security_of(request).authorize_items(request.scope, items)
    workflow_id = await orchestrator.submit(spec, owner=user_of(request.scope))
    if wait:
        await orchestrator.wait(workflow_id, orchestrator.settings.server.wait_timeout)
    workflow = await orchestrator.records.workflow(workflow_id)
    status = workflow["status"] if workflow else "Pending"
    return Response(
        Envelope(workflow_id),
        status_code=HTTP_202_ACCEPTED,
        headers={"Location": f"/tasks/{workflow_id}", "X-Workflow-Status": status},
    )


# -- stored rows as the API shows them ----------------------------------------------------


def task_out(row: dict[str, Any]) -> TaskOut:
    return TaskOut(
        id=row["id"],
        name=row["name"],
        command=redact_text(row["command"]),
        args=redact_args(list(row["args"] or [])),
        dependencies=list(row.get("dependencies", [])),
        soft_dependencies=list(row.get("soft_dependencies", [])),
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output=row["output"],
        error=row["error"],
        workflow_id=row["workflow_id"],
        operation_id=row["operation_id"],
        provider=row["provider"],
        action=row["action"],
        params=redact(row["params"] or {}),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        progress=row["progress"],
        result=row["result"],
        compensates=row["compensates"],
    )


def workflow_progress(counts: dict[str, int]) -> float:
    total = sum(counts.values())
    done = sum(n for s, n in counts.items() if s in ("Completed", "Failed", "Cancelled"))
    return round(100.0 * done / total, 1) if total else 100.0


def workflow_out(row: dict[str, Any]) -> WorkflowOut:
    counts = row.get("task_counts", {})
    return WorkflowOut(
        id=row["id"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        parallel_limit=row["parallel_limit"],
        rollback_enabled=row["rollback_enabled"],
        check_mode=row["check_mode"],
        owner=row["owner"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        task_counts=counts,
        progress=workflow_progress(counts),
    )


def workflow_as_task(row: dict[str, Any]) -> TaskOut:
    """A workflow in the seed's task shape, so `GET /tasks/{id}` answers for the id that
    `POST /workflows/*/create` returned."""
    spec = row["spec"] or {}
    counts = row.get("task_counts", {})
    completed = counts.get("Completed", 0)
    total = sum(counts.values())
    args = [
        f"--{k}={v}"
        for k, v in spec.items()
        if k in ("infra", "settings", "taskserv", "cluster_type")
    ]
    output = None
    if row["status"] == "Completed":
        output = f"Successfully ran {completed} of {total} tasks"
    return TaskOut(
        id=row["id"],
        name=row["name"],
        command=f"provisioning workflow {row['kind']}",
        args=args,
        dependencies=[],
        status=row["status"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        output=output,
        error=row["error"],
        workflow_id=row["id"],
        operation_id=None,
        provider="",
        action=row["kind"],
        params=redact(spec),
        attempts=1 if row["started_at"] else 0,
        max_attempts=1,
        timeout=None,
        progress=workflow_progress(counts),
        result={"task_counts": counts},
        compensates=None,
        kind="workflow",
    )


def event_out(event: LoggedEvent) -> EventOut:
    return EventOut(
        seq=event.seq,
        event_type=event.type,
        timestamp=event.at,
        data=event.data,
        workflow_id=event.workflow_id,
        task_id=event.task_id,
    )


@get("/health", tags=["health"], summary="Liveness: answers without authentication")
async def health() -> Envelope[str]:
    return Envelope("Orchestrator is healthy")


class TaskController(Controller):
    path = "/tasks"
    tags = ["tasks"]

    @get("/", summary="List tasks")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: TaskStatus | None = None,
        workflow_id: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[TaskOut]]]:
        check_page(limit, offset)
        rows, total = await orchestrator_of(state).records.tasks(
            status=status,
            workflow_id=workflow_id,
            limit=limit,
            offset=offset,
        )
        return Response(
            Envelope([task_out(r) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/{task_id:str}", summary="A task, or a workflow by the id its submission returned")
    async def show(self, state: State, task_id: str) -> Envelope[TaskOut]:
        records = orchestrator_of(state).records
        row = await records.task(task_id)
        if row is not None:
            return Envelope(task_out(row))
        workflow = await records.workflow(task_id)
        if workflow is not None:
            return Envelope(workflow_as_task(workflow))
        raise NotFound(f"task '{task_id}' not found")


class WorkflowController(Controller):
    path = "/workflows"
    tags = ["workflows"]

    @post("/servers/create", status_code=HTTP_202_ACCEPTED, summary="Create an infra's servers")
    async def servers_create(
        self, state: State, request: Request[Any, Any, Any], data: ServersCreate
    ) -> Response[Envelope[str]]:
        orchestrator = orchestrator_of(state)
        infra = load_infra(orchestrator.settings.workspace, data.infra, data.settings)
        spec = WorkflowSpec(
            kind="servers",
            name=f"create_servers {data.infra}",
            tasks=plan_servers(orchestrator.catalog, infra),
            parallel_limit=infra.parallel_limit,
            check_mode=data.check_mode,
            request={"infra": data.infra, "settings": data.settings},
        )
        return await submit(orchestrator, request, spec, data.wait)

    @post("/taskserv/create", status_code=HTTP_202_ACCEPTED, summary="Install a taskserv")
    async def taskserv_create(
        self, state: State, request: Request[Any, Any, Any], data: TaskservCreate
    ) -> Response[Envelope[str]]:
        orchestrator = orchestrator_of(state)
        check_operation(data.operation)
        infra = load_infra(orchestrator.settings.workspace, data.infra, data.settings)
        spec = WorkflowSpec(
            kind="taskserv",
            name=f"{data.operation}_taskserv {data.taskserv} {data.infra}",
            tasks=plan_taskserv(orchestrator.catalog, infra, data.operation, data.taskserv),
            parallel_limit=infra.parallel_limit,
            check_mode=data.check_mode,
            request={
                "infra": data.infra,
                "settings": data.settings,
                "taskserv": data.taskserv,
                "operation": data.operation,
            },
        )
        return await submit(orchestrator, request, spec, data.wait)

    @post("/cluster/create", status_code=HTTP_202_ACCEPTED, summary="Create a cluster")
    async def cluster_create(
        self, state: State, request: Request[Any, Any, Any], data: ClusterCreate
    ) -> Response[Envelope[str]]:
        orchestrator = orchestrator_of(state)
        check_operation(data.operation)
        infra = load_infra(orchestrator.settings.workspace, data.infra, data.settings)
        spec = WorkflowSpec(
            kind="cluster",
            name=f"{data.operation}_cluster {data.cluster_type} {data.infra}",
            tasks=plan_cluster(orchestrator.catalog, infra, data.operation, data.cluster_type),
            parallel_limit=infra.parallel_limit,
            check_mode=data.check_mode,
            request={
                "infra": data.infra,
                "settings": data.settings,
                "cluster_type": data.cluster_type,
                "operation": data.operation,
            },
        )
        return await submit(orchestrator, request, spec, data.wait)

    @post("/", status_code=HTTP_202_ACCEPTED, summary="Submit a workflow as an explicit graph")
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: WorkflowIn
    ) -> Response[Envelope[str]]:
        spec = WorkflowSpec(
            kind="custom",
            name=data.name,
            tasks=[t.to_spec() for t in data.tasks],
            parallel_limit=data.parallel_limit,
            check_mode=data.check_mode,
            request={"name": data.name},
        )
        return await submit(orchestrator_of(state), request, spec, data.wait)

    @get("/{workflow_id:str}/events", summary="A workflow's events, from the log, oldest first")
    async def events(
        self,
        state: State,
        workflow_id: str,
        after: Offset = 0,
        limit: Limit = DEFAULT_LIMIT,
    ) -> Envelope[list[EventOut]]:
        """What happened to the workflow (`after` a seq already seen): a follower that
        attaches late replays its retries and failures from here before it follows."""
        records = orchestrator_of(state).records
        if await records.workflow(workflow_id) is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        rows = await records.events(after, workflow_id=workflow_id, limit=limit)
        return Envelope([event_out(row) for row in rows])

    @get("/", summary="List workflows")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: WorkflowStatus | None = None,
        kind: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[WorkflowOut]]]:
        check_page(limit, offset)
        rows, total = await orchestrator_of(state).records.workflows(
            status=status, kind=kind, limit=limit, offset=offset
        )
        return Response(
            Envelope([workflow_out(r) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/{workflow_id:str}", summary="A workflow with its task counts")
    async def show(self, state: State, workflow_id: str) -> Envelope[WorkflowOut]:
        row = await orchestrator_of(state).records.workflow(workflow_id)
        if row is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        return Envelope(workflow_out(row))

    @get(
        "/{workflow_id:str}/plan",
        summary="What a check-mode workflow would change, per resource",
        description="Each resource its checks would create, change or delete, compared "
        "with the inventory, with the changed fields, what is irreversible, and the "
        "checks that failed. Whole once the workflow has ended (`status`).",
    )
    async def plan(self, state: State, workflow_id: str) -> Envelope[Plan]:
        orchestrator = orchestrator_of(state)
        records = orchestrator.records
        row = await records.workflow(workflow_id)
        if row is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        if not row["check_mode"]:
            raise Conflict(
                f"workflow '{workflow_id}' did not run in check mode: its changes are done "
                f"(see GET /tasks?workflow_id={workflow_id})"
            )
        tasks = await records.tasks_of([workflow_id])
        inventory = inventory_index(await records.resources(kind=None, provider=None))
        return Envelope(workflow_plan(row, tasks, inventory, orchestrator.catalog))

    @post("/{workflow_id:str}/cancel", status_code=200, summary="Cancel a workflow")
    async def cancel(self, state: State, workflow_id: str) -> Envelope[str]:
        orchestrator = orchestrator_of(state)
        row = await orchestrator.records.workflow(workflow_id)
        if row is None:
            raise NotFound(f"workflow '{workflow_id}' not found")
        if not await orchestrator.cancel(workflow_id):
            return Envelope(f"Workflow {workflow_id} already ended ({row['status']})")
        return Envelope("Workflow cancelled")
