"""Seed 000's system endpoints over the `host` provider's `system` kind (read-only):
`GET /system/summary`, `/system/cpu`, `/system/memory`."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.datastructures import State

from orchestrator.api.host.common import host_read
from orchestrator.api.host.network import Instance
from orchestrator.http.envelope import Envelope


class SystemController(Controller):
    path = "/system"
    tags = ["host"]

    @get(
        "/summary",
        summary="The host: hostname, os, kernel, uptime (seconds), load_average",
    )
    async def summary(self, state: State, instance: Instance = None) -> Envelope[dict[str, Any]]:
        return Envelope(await host_read(state, "system", "summary", {}, instance))

    @get("/cpu", summary="Processors: model, counts, use (percent, sampled), times, load")
    async def cpu(self, state: State, instance: Instance = None) -> Envelope[dict[str, Any]]:
        return Envelope(await host_read(state, "system", "cpu", {}, instance))

    @get("/memory", summary="Memory and swap, in bytes, as `free` counts them")
    async def memory(self, state: State, instance: Instance = None) -> Envelope[dict[str, Any]]:
        return Envelope(await host_read(state, "system", "memory", {}, instance))
