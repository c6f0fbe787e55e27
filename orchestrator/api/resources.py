"""The inventory: what providers created or changed, one row per item (`GET /resources`)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from orchestrator.api.controllers import orchestrator_of
from orchestrator.api.redaction import redact
from orchestrator.api.schemas import ResourceOut
from orchestrator.errors import NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.resources import Catalog


def resource_out(row: dict[str, Any], catalog: Catalog) -> ResourceOut:
    kind = next((k for k in catalog.kinds(row["provider"]) if k.name == row["kind"]), None)
    return ResourceOut(
        id=row["id"],
        provider=row["provider"],
        kind=row["kind"],
        name=row["name"],
        status=row["status"],
        resource=None if kind is None else f"{kind.plural}:{row['name']}",
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
        rows, total = await orchestrator.records.resources(
            kind=kind, provider=provider, limit=limit, offset=offset
        )
        return Response(
            Envelope([resource_out(r, orchestrator.catalog) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )

    @get("/{resource_id:str}", summary="One inventory row")
    async def show(self, state: State, resource_id: str) -> Envelope[ResourceOut]:
        orchestrator = orchestrator_of(state)
        row = await orchestrator.records.resource(resource_id)
        if row is None:
            raise NotFound(f"resource '{resource_id}' not found")
        return Envelope(resource_out(row, orchestrator.catalog))
