"""The inventory: what providers created or changed, one row per item (`GET /resources`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from orchestrator.api.controllers import orchestrator_of, security_of
from orchestrator.api.redaction import redact
from orchestrator.api.schemas import ResourceOut
from orchestrator.errors import NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.resources import Catalog


def policy_name(row: dict[str, Any], catalog: Catalog) -> str | None:
    """The name policies give the row's item (`vms:<id>`), if its kind is declared."""
    kind = next((k for k in catalog.kinds(row["provider"]) if k.name == row["kind"]), None)
    return None if kind is None else f"{kind.plural}:{row['name']}"


async def readable(
    request: Request[Any, Any, Any], rows: list[dict[str, Any]], catalog: Catalog
) -> list[dict[str, Any]]:
    """The rows whose items the caller may read, as its owner's policies say (the
    default `vm_privacy_policy` keeps other users' VMs out of sight)."""
    items = [(policy_name(row, catalog) or f"resources:{row['id']}", row["owner"]) for row in rows]
    allowed = await security_of(request).allows_each(request.scope, "read", items)
    return [row for row, ok in zip(rows, allowed, strict=True) if ok]


def resource_out(row: dict[str, Any], catalog: Catalog) -> ResourceOut:
    return ResourceOut(
        id=row["id"],
        provider=row["provider"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        resource=policy_name(row, catalog),
        owner=row["owner"],
        workflow_id=row["workflow_id"],
        task_id=row["task_id"],
        data=redact(row["data"] or {}),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


class ResourceController(Controller):
    path = "/resources"
    tags = ["resources"]

    @get("/", summary="List the inventory, by provider instance, kind and name")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        kind: str | None = None,
        provider: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[ResourceOut]]]:
        check_page(limit, offset)
        orchestrator = orchestrator_of(state)
        catalog = orchestrator.catalog
        every = await orchestrator.records.resources(kind=kind, provider=provider)
        rows = await readable(request, every, catalog)
        return Response(
            Envelope([resource_out(r, catalog) for r in rows[offset : offset + limit]]),
            headers=page_headers(request, len(rows), limit, offset),
        )

    @get("/{resource_id:str}", summary="One inventory row")
    async def show(
        self, state: State, request: Request[Any, Any, Any], resource_id: str
    ) -> Envelope[ResourceOut]:
        orchestrator = orchestrator_of(state)
        row = await orchestrator.records.resource(resource_id)
        # An item the caller may not read is not found, as if it did not exist.
        if row is None or not await readable(request, [row], orchestrator.catalog):
            raise NotFound(f"resource '{resource_id}' not found")
        return Envelope(resource_out(row, orchestrator.catalog))
