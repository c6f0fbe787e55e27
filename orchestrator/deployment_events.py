"""`deployment_status_changed` (seed 002): a deployment's status as its workflows move.

Not an event of its own in the log: each `WorkflowStatusChanged` of a `deployment`
workflow is one, read in seed 002's shape where it is sent: on `/ws` (beside the log
event), on `/v1/ws/notifications` (each user their own deployments'; administrators
every one) and in webhooks (`deployment_status_changed`, written to the outbox with the
log event and completed from the workflow's row when posted, as task events get their
output). So it is exactly as durable, ordered and resumable (`seq`) as the log.

    {"type": "deployment_status_changed", "deployment_id": …, "timestamp": …,
     "data": {"status": "running", "url": …, "app_name": …, "operation": "create",
              "workflow_id": …, "workflow_status": "Completed", "error": null}}

`status` is the deployment's, as the API reports it: `pending` while a create runs,
`updating` while another change runs (or rolls back), then `running`, `stopped`,
`deleted`, or `failed` (a create, stop, start or delete that failed; a scale or update
that failed was rolled back to the previous spec, so `running` with its `error`). A
`restart` (the health monitor's, `orchestrator/deployment_health.py`: a replica failed
its health check) is `updating` while its replica is down, then `running` again (its
`error` when the replica did not come back healthy).
`url` is the one known when the change was asked (a custom domain or the configured
suffix's); null where it is a replica's loopback address, which `GET` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.engine import AsyncEngine
from orchestrator.store.workflows import get_workflow

TYPE = "deployment_status_changed"
#: The log event each one is read from.
SOURCE = "WorkflowStatusChanged"
#: A deployment's workflows that are changing it.
ACTIVE = ("Pending", "Running", "RollingBack")
_DONE = {"create": "running", "scale": "running", "update": "running", "start": "running"}
_DONE |= {"stop": "stopped", "delete": "deleted", "restart": "running"}
#: Changes whose failure leaves the deployment running as it was (rolled back, or one
#: replica that did not come back).
_KEPT = ("scale", "update", "restart")


def deployment_workflow(
    ident: str, operation: str, tasks: list[TaskSpec], **request: Any
) -> WorkflowSpec:
    """A change of deployment `ident` as a workflow: its `request` is what the events
    and the API read back (`deployment_id`, `operation`, `app_name`, `url`, `state`, …).
    Create, scale and update roll back when a task fails."""
    return WorkflowSpec(
        kind="deployment",
        name=f"deployment {request.get('app_name', ident)} {operation}"[:200],
        tasks=tasks,
        rollback_enabled=operation in ("create", "scale", "update"),
        request={"deployment_id": ident, "operation": operation, **request},
    )


def url_of(record: dict[str, Any], replicas: list[dict[str, Any]], suffix: str) -> str | None:
    """The first custom domain, else `http://<app_name>.<domain_suffix>` when a suffix is
    configured, else the first running replica's loopback address."""
    return next(iter(urls_of(record, replicas, suffix)), None)


def urls_of(record: dict[str, Any], replicas: list[dict[str, Any]], suffix: str) -> list[str]:
    """Every address the deployment answers at, `url` first."""
    urls = [f"http://{d['domain']}" for d in record.get("domains") or []]
    if suffix:
        urls.append(f"http://{record['app_name']}.{suffix}")
    urls += [
        f"http://127.0.0.1:{r['host_port']}"
        for r in replicas
        if r.get("running") and r.get("host_port")
    ]
    return urls


def is_source(kind: str, data: Mapping[str, Any]) -> bool:
    """Whether a log event of type `kind` is a deployment's status change."""
    return kind == SOURCE and data.get("kind") == "deployment"


def deployment_status(operation: str, workflow_status: str, state: str | None = None) -> str:
    """`state`: the deployment's recorded one when the change was asked (a change of
    its domains leaves it as it was)."""
    if workflow_status in ("Pending", "Running"):
        return "pending" if operation == "create" else "updating"
    if workflow_status == "RollingBack":
        return "updating"
    if operation == "domains":
        return state or "running"
    if workflow_status == "Completed":
        return _DONE.get(operation, "running")
    # Failed, Cancelled or RolledBack: a scale or update rolled back to the old spec.
    return "running" if operation in _KEPT else "failed"


async def deployment_event(
    engine: AsyncEngine, data: Mapping[str, Any], at: datetime | str
) -> dict[str, Any] | None:
    """Seed 002's event for a deployment workflow's `WorkflowStatusChanged` data, with
    `user_id` (the deployment's owner) beside it; None when the workflow is gone."""
    workflow = await get_workflow(engine, str(data.get("workflow_id", "")))
    if workflow is None:
        return None
    request = workflow.get("spec") or {}
    operation = str(request.get("operation", ""))
    workflow_status = str(data.get("status", ""))
    stamp = at.isoformat().replace("+00:00", "Z") if isinstance(at, datetime) else str(at)
    return {
        "type": TYPE,
        "deployment_id": request.get("deployment_id"),
        "timestamp": stamp,
        "user_id": workflow.get("owner"),
        "data": {
            "status": deployment_status(operation, workflow_status, request.get("state")),
            "url": request.get("url"),
            "app_name": request.get("app_name"),
            "operation": operation,
            "workflow_id": workflow["id"],
            "workflow_status": workflow_status,
            "error": data.get("error"),
        },
    }
