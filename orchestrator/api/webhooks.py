"""Webhook deliveries: what was sent where, with attempts and the last error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, get
from litestar.datastructures import State

from orchestrator.api.controllers import orchestrator_of
from orchestrator.http.envelope import Envelope
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.store.outbox import Delivery, DeliveryStatus


class DeliveryOut(msgspec.Struct):
    id: str
    event: str
    event_seq: int
    url: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(**{k: getattr(delivery, k) for k in DeliveryOut.__struct_fields__})


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @get("/deliveries", summary="Webhook deliveries, newest events first")
    async def deliveries(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: DeliveryStatus | None = None,
        event: str | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[DeliveryOut]]]:
        check_page(limit, offset)
        rows, total = await orchestrator_of(state).records.deliveries(
            status=status, event=event, limit=limit, offset=offset
        )
        return Response(
            Envelope([delivery_out(r) for r in rows]),
            headers=page_headers(request, total, limit, offset),
        )
