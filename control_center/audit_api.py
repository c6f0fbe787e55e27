"""`GET /audit/logs` (seed 003): newest first, filtered, paged."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, Response, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    check,
    services,
)
from control_center.schemas import AuditOut, audit_out
from control_center.store.audit import list_audit
from orchestrator.errors import InvalidInput
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers


class AuditController(Controller):
    path = "/audit"
    tags = ["audit"]

    @get("/logs", summary="Audit records, newest first")
    async def logs(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        user_id: FromQuery[str | None] = None,
        action: FromQuery[str | None] = None,
        resource: Annotated[
            str | None, QueryParameter(description="exact, or a prefix ending in *")
        ] = None,
        since: Annotated[datetime | None, QueryParameter(name="from")] = None,
        until: Annotated[datetime | None, QueryParameter(name="to")] = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[AuditOut]]]:
        await check(request, principal, "list", "audit:logs")
        check_page(limit, offset)
        for name, moment in (("from", since), ("to", until)):
            if moment is not None and moment.tzinfo is None:
                raise InvalidInput(f"{name}: give a time zone (for example 2025-09-26T10:00:00Z)")
        entries, total = await list_audit(
            services(state).db,
            user_id=user_id,
            action=action,
            resource=resource,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
        return Response(
            Envelope([audit_out(entry) for entry in entries]),
            headers=page_headers(request, total, limit, offset),
        )
