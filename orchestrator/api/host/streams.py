"""Vapor's `/ws/metrics`: the host's CPU, memory, disk and network, pushed.

Authenticated as `/ws` is: `?token=`, or a first message `{"type": "auth", "payload":
{"token": …}}` (Vapor's shape; `{"type": "auth", "token": …}` too), then
`{"type": "subscribe"}`; a sample of each metric follows every `?interval=` seconds
(default 1, from 0.2 to 60): `{"type": "metric", "metric": "cpu", "timestamp": …,
"data": {…}}`. The policy is `read` on `system:*`; the streams count towards
`server.ws_connections_per_user` with the event streams.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import psutil
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from orchestrator.api.host.common import host_instance
from orchestrator.api.security import access_of
from orchestrator.api.sockets import (
    AuthMessage,
    cancel_when_closed,
    first_message_principal,
    refuse,
)
from orchestrator.errors import DomainError
from orchestrator.service import Orchestrator
from providers.base import ProviderError
from providers.host._journal import LogFilters

ROUTE = ("GET", "/ws/metrics")


def sample() -> dict[str, dict[str, Any]]:
    """One reading of each metric (CPU use since the previous reading)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    usage = psutil.disk_usage("/")
    return {
        "cpu": {
            "usage_percent": psutil.cpu_percent(interval=None),
            "load_average": list(os.getloadavg()),
        },
        "memory": {
            "total": memory.total,
            "available": memory.available,
            "used": memory.used,
            "percent": memory.percent,
        },
        "disk": {
            "root_total": usage.total,
            "root_used": usage.used,
            "read_bytes": disk.read_bytes if disk else 0,
            "write_bytes": disk.write_bytes if disk else 0,
        },
        "network": {
            "bytes_sent": net.bytes_sent,
            "bytes_recv": net.bytes_recv,
            "packets_sent": net.packets_sent,
            "packets_recv": net.packets_recv,
        },
    }


@websocket("/ws/metrics")
async def metrics_stream(socket: WebSocket[Any, Any, Any]) -> None:
    orchestrator: Orchestrator = socket.app.state.orchestrator
    await socket.accept()
    try:
        interval = float(socket.query_params.get("interval", "1"))
    except ValueError:
        interval = -1.0
    if not 0.2 <= interval <= 60:
        await refuse(socket, "INVALID_INPUT", "interval: seconds from 0.2 to 60")
        return
    principal = access_of(socket.scope).principal
    if principal is None:
        principal = await first_message_principal(socket, "read", ROUTE)
        if principal is None:
            return
    streams = orchestrator.events.streams
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[principal.user_id] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
        return
    streams[principal.user_id] += 1
    try:
        await _serve(socket, interval)
    except WebSocketDisconnect:
        pass
    finally:
        streams[principal.user_id] -= 1


async def _serve(socket: WebSocket[Any, Any, Any], interval: float) -> None:
    while True:  # until {"type": "subscribe"}
        try:
            message = msgspec.json.decode(await socket.receive_text(), type=AuthMessage)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await refuse(socket, "INVALID_INPUT", f"not a message: {exc}")
            return
        if message.type == "subscribe":
            break
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_when_closed, socket, group.cancel_scope)
        while True:
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            for metric, data in (await asyncio.to_thread(sample)).items():
                body = {"type": "metric", "metric": metric, "timestamp": now, "data": data}
                await socket.send_bytes(msgspec.json.encode(body))
            await anyio.sleep(interval)


LOGS_ROUTE = ("GET", "/ws/logs")


class LogSubscription(msgspec.Struct, forbid_unknown_fields=True):
    filters: LogFilters = msgspec.field(default_factory=LogFilters)


class LogSubscribe(msgspec.Struct):
    type: str
    #: Read as a `LogSubscription` once `type` says subscribe (an auth message before it
    #: carries a token there).
    payload: Any = None


@websocket("/ws/logs")
async def log_stream(socket: WebSocket[Any, Any, Any]) -> None:
    """Seed 000's `/ws/logs`: after `{"type": "subscribe", "payload": {"filters": {unit,
    priority, follow, lines}}}`, the latest `lines` matching entries (10), oldest first,
    then each new one as it is written (`follow`, the default), as `{"type": "log",
    "data": entry}` in `GET /logs`'s shape; without `follow`, `{"type": "end"}` and a
    close. `?instance=` names the host instance where several are configured."""
    orchestrator: Orchestrator = socket.app.state.orchestrator
    await socket.accept()
    principal = access_of(socket.scope).principal
    if principal is None:
        principal = await first_message_principal(socket, "read", LOGS_ROUTE)
        if principal is None:
            return
    try:
        instance = host_instance(orchestrator.catalog, socket.query_params.get("instance"))
    except DomainError as exc:
        await refuse(socket, exc.code, exc.message)
        return
    provider = orchestrator.catalog.providers[instance]
    streams = orchestrator.events.streams
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[principal.user_id] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
        return
    streams[principal.user_id] += 1
    try:
        filters = await _log_filters(socket)
        if filters is not None:
            await _follow(socket, provider, filters)
    except WebSocketDisconnect:
        pass
    finally:
        streams[principal.user_id] -= 1


async def _log_filters(socket: WebSocket[Any, Any, Any]) -> LogFilters | None:
    while True:  # until {"type": "subscribe"}
        try:
            message = msgspec.json.decode(await socket.receive_text(), type=LogSubscribe)
            if message.type == "subscribe":
                payload = message.payload or {}
                return msgspec.convert(payload, LogSubscription).filters
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            await refuse(socket, "INVALID_INPUT", f"not a subscription: {exc}")
            return None


async def _follow(socket: WebSocket[Any, Any, Any], provider: Any, filters: LogFilters) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(cancel_when_closed, socket, group.cancel_scope)
        try:
            async for entry in provider.follow_journal(filters):
                body = {"type": "log", "data": entry}
                await socket.send_bytes(msgspec.json.encode(body))
        except ProviderError as exc:
            await refuse(socket, "JOURNAL_UNAVAILABLE", str(exc))
        else:
            await socket.send_bytes(msgspec.json.encode({"type": "end"}))
            await socket.close()
        group.cancel_scope.cancel()
