"""Vapor's `/ws/metrics`: the host's CPU, memory, disk and network, pushed.

Authenticated as `/ws` is: `?token=`, or a first message `{"type": "auth", "payload":
{"token": …}}` (Vapor's shape; `{"type": "auth", "token": …}` too), then
`{"type": "subscribe"}`; a sample of each metric follows every `?interval=` seconds
(default 1, from 0.2 to 60): `{"type": "metric", "metric": "cpu", "timestamp": …,
"data": {…}}` (one reading per interval, shared by all its subscribers: `MetricsHub`).
The policy is `read` on `system:*`; the streams count towards
`server.ws_connections_per_user` with the event streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec
import psutil
import structlog
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from orchestrator.api.host.common import host_instance
from orchestrator.api.sockets import (
    AuthMessage,
    cancel_when_closed,
    refuse,
    socket_credential,
    while_allowed,
)
from orchestrator.errors import DomainError
from orchestrator.service import Orchestrator
from providers.base import ProviderError
from providers.host._journal import LogFilters

log = structlog.get_logger(__name__)

ROUTE = ("GET", "/ws/metrics")


class CpuMeter:
    """CPU use between two readings of one feed (psutil's formula); not
    `psutil.cpu_percent(None)`, whose "since the last call" is any caller's."""

    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    @staticmethod
    def _times(times: Any) -> tuple[float, float]:
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        return total, total - times.idle - getattr(times, "iowait", 0.0)

    def percent(self) -> float:
        now = psutil.cpu_times()
        (total, busy), (last_total, last_busy) = self._times(now), self._times(self._last)
        self._last = now
        if total <= last_total:
            return 0.0
        return round(min(100.0, max(0.0, 100 * (busy - last_busy) / (total - last_total))), 1)


def sample(cpu: CpuMeter) -> dict[str, dict[str, Any]]:
    """One reading of each metric (CPU use since the feed's previous reading)."""
    memory = psutil.virtual_memory()
    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    usage = psutil.disk_usage("/")
    return {
        "cpu": {
            "usage_percent": cpu.percent(),
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


#: The encoded messages of one sample, one per metric.
Reading = list[bytes]


@dataclass(eq=False)
class _Feed:
    interval: float
    queues: set[asyncio.Queue[Reading]] = field(default_factory=set)
    last: Reading | None = None
    task: asyncio.Task[None] | None = None


class MetricsHub:
    """One reading per tick for every subscriber of an interval: the host is sampled and
    each message encoded once, not once per subscriber (50 subscribers cost one reading
    a second). A subscriber that falls behind misses readings; it never holds up the
    others."""

    def __init__(self) -> None:
        self._feeds: dict[float, _Feed] = {}

    @contextlib.asynccontextmanager
    async def subscribe(self, interval: float) -> AsyncIterator[asyncio.Queue[Reading]]:
        """The readings of `interval`'s feed, from the latest one (started with the first
        subscriber, stopped with the last)."""
        feed = self._feeds.get(interval)
        if feed is None:
            feed = self._feeds[interval] = _Feed(interval)
            feed.task = asyncio.create_task(self._run(feed))
        queue: asyncio.Queue[Reading] = asyncio.Queue(maxsize=2)
        if feed.last is not None:
            queue.put_nowait(feed.last)
        feed.queues.add(queue)
        try:
            yield queue
        finally:
            feed.queues.discard(queue)
            if not feed.queues and self._feeds.get(interval) is feed:
                del self._feeds[interval]
                assert feed.task is not None
                feed.task.cancel()

    @staticmethod
    async def _run(feed: _Feed) -> None:
        cpu = CpuMeter()
        while True:
            try:
                reading = await asyncio.to_thread(sample, cpu)
            except Exception:  # a reading failed: the next one may not
                log.exception("host metrics: a reading failed")
                await asyncio.sleep(feed.interval)
                continue
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            feed.last = [
                msgspec.json.encode(
                    {"type": "metric", "metric": metric, "timestamp": now, "data": data}
                )
                for metric, data in reading.items()
            ]
            for queue in list(feed.queues):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(feed.last)
            await asyncio.sleep(feed.interval)


def _hub(socket: WebSocket[Any, Any, Any]) -> MetricsHub:
    hub: MetricsHub = socket.app.state.setdefault("host_metrics_hub", MetricsHub())
    return hub


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
    credential = await socket_credential(socket, "read", ROUTE)
    if credential is None:
        return
    principal = credential.principal
    streams = orchestrator.events.streams
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[principal.user_id] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
        return
    streams[principal.user_id] += 1
    try:
        await while_allowed(socket, credential, "read", lambda: _serve(socket, interval))
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
    async with _hub(socket).subscribe(interval) as readings, anyio.create_task_group() as group:
        group.start_soon(cancel_when_closed, socket, group.cancel_scope)
        while True:
            for encoded in await readings.get():
                await socket.send_bytes(encoded)


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
    credential = await socket_credential(socket, "read", LOGS_ROUTE)
    if credential is None:
        return
    principal = credential.principal
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
            chosen = filters
            await while_allowed(
                socket, credential, "read", lambda: _follow(socket, provider, chosen)
            )
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
