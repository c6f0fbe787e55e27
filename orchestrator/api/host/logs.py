"""Seed 000's `GET /logs` over the `host` provider's `log_entry` kind: the journal,
filtered by `service`, `priority` (that and more severe), `since`/`until` (ISO 8601),
paged (`page`, `page_size` up to 1000), newest first. No journal: 503
`JOURNAL_UNAVAILABLE`."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from litestar.params import Parameter

from orchestrator.api.host.common import host_read
from orchestrator.api.host.network import Instance
from orchestrator.errors import JournalUnavailable
from orchestrator.http.envelope import Envelope
from providers.host._journal import MAX_PAGE_SIZE, Priority


class LogsOut(msgspec.Struct):
    #: timestamp, priority, unit, message, hostname, pid
    logs: list[dict[str, Any]]
    total_count: int
    page: int
    page_size: int


class LogController(Controller):
    path = "/logs"
    tags = ["host"]

    @get("/", summary="Journal entries, filtered and paged (newest first)")
    async def query(
        self,
        state: State,
        service: Annotated[str | None, Parameter(max_length=128)] = None,
        priority: Priority | None = None,
        since: Annotated[str | None, Parameter(max_length=40)] = None,
        until: Annotated[str | None, Parameter(max_length=40)] = None,
        page: Annotated[int, Parameter(ge=1, le=1_000_000)] = 1,
        page_size: Annotated[int, Parameter(ge=1, le=MAX_PAGE_SIZE)] = 100,
        instance: Instance = None,
    ) -> Envelope[LogsOut]:
        asked: dict[str, Any] = {"page": page, "page_size": page_size}
        for name, value in (
            ("service", service),
            ("priority", priority),
            ("since", since),
            ("until", until),
        ):
            if value is not None:
                asked[name] = value
        found = await host_read(state, "log_entry", "query", asked, instance)
        if "unavailable" in found:
            raise JournalUnavailable(f"no journal to read: {found['unavailable']}")
        return Envelope(msgspec.convert(found, LogsOut))
