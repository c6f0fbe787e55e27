"""Monitoring (seed 003): Prometheus `/metrics`, the `/ws` event stream, HTTP metrics.

The stream reads the event log from the client's last `seq` (`?since=`; default: from
now on) and is woken by `EventBus` after each commit. A client that does not keep up is
told (`{"type": "error", "code": "SLOW_CONSUMER"}`) and disconnected; since it reads
the log, it can reconnect with `since` and lose nothing. The executor never waits for a
client.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec
import structlog
from litestar import Response, WebSocket, get, websocket
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.exceptions import WebSocketDisconnect
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator import deployment_events as deployments
from orchestrator.api.controllers import orchestrator_of
from orchestrator.api.sockets import AuthPayload, refuse, socket_credential, while_allowed
from orchestrator.http.aliases import full_path
from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.service import Orchestrator
from orchestrator.store.events import LoggedEvent


class StreamFilter(msgspec.Struct, forbid_unknown_fields=True):
    type: str = "subscribe"
    workflow_id: str | None = None
    event_types: list[str] = []
    token: str | None = None
    payload: AuthPayload | None = None

    @property
    def auth_token(self) -> str | None:
        """The token of `{"type": "auth", "token": …}` or `{…, "payload": {"token": …}}`."""
        return self.token or (self.payload.token if self.payload else None)


@get("/metrics", tags=["monitoring"], summary="Prometheus metrics", media_type=CONTENT_TYPE_LATEST)
async def metrics(state: State) -> Response[bytes]:
    orchestrator = orchestrator_of(state)
    await orchestrator.refresh_workflow_counts()
    await state.vms.count()
    return Response(orchestrator.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def stream_message(event: LoggedEvent) -> dict[str, Any]:
    """An event as the stream sends it: `{event_type, timestamp, data, metadata, seq}`."""
    return {
        "event_type": event.type,
        "timestamp": event.at,
        "data": event.data,
        "metadata": {"workflow_id": event.workflow_id, "task_id": event.task_id},
        "seq": event.seq,
    }


class _Subscription:
    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        query = socket.query_params
        types = query.get("event_type") or query.get("event_types") or ""
        self.workflow_id: str | None = query.get("workflow_id")
        self.types = [t for t in types.split(",") if t]
        self.changed = asyncio.Event()

    def update(self, request: StreamFilter) -> None:
        self.workflow_id = request.workflow_id
        self.types = list(request.event_types)
        self.changed.set()


@websocket("/ws")
async def event_stream(socket: WebSocket[Any, Any, Any]) -> None:
    orchestrator: Orchestrator = socket.app.state.orchestrator
    await socket.accept()
    # No ?token=: the first message must be {"type": "auth"}.
    credential = await socket_credential(socket, "read", ("GET", "/ws"))
    if credential is None:
        return
    user = credential.principal.user_id
    limit = orchestrator.settings.server.ws_connections_per_user
    streams = orchestrator.events.streams
    if streams[user] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} event streams per user")
        return
    streams[user] += 1
    try:
        await while_allowed(socket, credential, "read", lambda: _stream(socket, orchestrator))
    finally:
        streams[user] -= 1


async def _stream(socket: WebSocket[Any, Any, Any], orchestrator: Orchestrator) -> None:
    since = socket.query_params.get("since")
    try:
        after = int(since) if since is not None else await orchestrator.records.last_seq()
    except ValueError:
        await refuse(socket, "INVALID_INPUT", "since: must be an event seq (an integer)")
        return
    subscription = _Subscription(socket)
    async with anyio.create_task_group() as group:

        async def listen() -> None:
            try:
                while True:
                    raw = await socket.receive_text()
                    try:
                        request = msgspec.json.decode(raw, type=StreamFilter)
                    except msgspec.DecodeError as exc:
                        await _send(
                            socket, {"type": "error", "code": "INVALID_INPUT", "error": str(exc)}
                        )
                        continue
                    if request.type == "subscribe":
                        subscription.update(request)
            except WebSocketDisconnect:
                pass
            group.cancel_scope.cancel()

        group.start_soon(listen)
        with contextlib.suppress(WebSocketDisconnect, anyio.ClosedResourceError):
            await _pump(socket, orchestrator, subscription, after)
        group.cancel_scope.cancel()


async def _pump(
    socket: WebSocket[Any, Any, Any],
    orchestrator: Orchestrator,
    subscription: _Subscription,
    after: int,
) -> None:
    bus = orchestrator.events
    limits = orchestrator.settings.server
    while True:
        version = bus.version
        types = subscription.types
        events = await orchestrator.records.events(
            after,
            workflow_id=subscription.workflow_id,
            types=[*types, deployments.SOURCE] if deployments.TYPE in types else types,
        )
        for event in events:
            messages = [stream_message(event)] if not types or event.type in types else []
            if deployments.is_source(event.type, event.data) and (
                not types or deployments.TYPE in types
            ):
                derived = await deployments.deployment_event(
                    orchestrator.engine, event.data, event.at
                )
                if derived is not None:
                    messages.append(
                        {**stream_message(event), "event_type": deployments.TYPE, "data": derived}
                    )
            sent = True
            for message in messages:
                sent = sent and await _send(socket, message, limits.ws_send_timeout)
            if not sent:
                await refuse(
                    socket,
                    "SLOW_CONSUMER",
                    f"the client did not keep up; reconnect with since={after} to resume",
                )
                return
            after = event.seq
        if events:
            head = await orchestrator.records.last_seq()
            if head - after > limits.ws_max_lag:
                await refuse(
                    socket,
                    "SLOW_CONSUMER",
                    f"more than {limits.ws_max_lag} events behind; reconnect with since={after} "
                    "to resume",
                )
                return
            continue
        subscription.changed.clear()
        waiter = asyncio.ensure_future(bus.wait_for_change(version))
        changed = asyncio.ensure_future(subscription.changed.wait())
        try:
            await asyncio.wait([waiter, changed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            changed.cancel()


async def _send(
    socket: WebSocket[Any, Any, Any], message: dict[str, Any], patience: float = 5.0
) -> bool:
    """Send one message; False when the client did not take it within `patience` s."""
    try:
        with anyio.fail_after(patience):
            await socket.send_bytes(msgspec.json.encode(message))
    except TimeoutError:
        return False
    return True


def http_metrics(metrics_of: Callable[[], Metrics]) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware counting requests by route template and status, with latency."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def watching(message: Any) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, watching)
            finally:
                route = scope.get("path_template") or "unmatched"
                method = scope.get("method", "")
                registry = metrics_of()
                registry.http_requests.labels(method, route, str(status)).inc()
                registry.http_duration.labels(method, route).observe(time.perf_counter() - started)

        return wrapped

    return middleware


def request_context(app: ASGIApp) -> ASGIApp:
    """Bind a request id (the client's `X-Request-ID`, or a new one) to every log line
    of the request, and return it in the response's `X-Request-ID`."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given[:64] if given.isascii() and given.isprintable() and given else ""
        request_id = request_id or new_id()

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(
            request_id=request_id, method=scope.get("method"), path=full_path(scope)
        ):
            await app(scope, receive, tagged)

    return middleware
