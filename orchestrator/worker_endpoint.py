"""The HTTP listener of `provisioning worker`: `/metrics` and `/health`, nothing else.

- `GET /metrics`: the worker's Prometheus metrics (`orchestrator/metrics.py`): its task
  counters, durations, scheduling delays, running tasks, database round trips. Open
  like `serve`'s when `auth.metrics_open` (the default); otherwise it needs a session
  token or an API key allowed `read` on `metrics:*`, as on `serve`.
- `GET /health`: 200 `{"success": true, "data": {...}}` while the worker runs and its
  database answers; 503 with the error envelope (code `UNAVAILABLE`) otherwise.

Settings: `[worker] metrics`, `metrics_host`, `metrics_port` (0: a free port; the start
banner prints the address).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST

from orchestrator.errors import DomainError
from orchestrator.http.envelope import Envelope, ErrorBody

if TYPE_CHECKING:
    from orchestrator.service import Orchestrator

log = structlog.get_logger(__name__)

#: How long a scrape waits for the workflow counts (read from the database).
COUNTS_PATIENCE = 2.0

Scope = dict[str, Any]
Message = dict[str, Any]


class _Server(uvicorn.Server):
    """uvicorn, without its signal handlers: the worker stops on its own signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class WorkerEndpoint:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Listen; return the address (`http://host:port/`)."""
        worker = self.orchestrator.settings.worker
        family = socket.AF_INET6 if ":" in worker.metrics_host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((worker.metrics_host, worker.metrics_port))
        except OSError as exc:
            listener.close()
            raise OSError(
                f"worker.metrics_port: cannot listen on {worker.metrics_host}:"
                f"{worker.metrics_port} ({exc.strerror}); give each worker on a host its own "
                "port, or 0 for a free one"
            ) from exc
        listener.listen(64)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        config = uvicorn.Config(
            self,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            server_header=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[listener]), name="metrics")
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it stopped
            await asyncio.sleep(0.01)
        host = f"[{worker.metrics_host}]" if family == socket.AF_INET6 else worker.metrics_host
        return f"http://{host}:{port}/"

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._task, return_exceptions=True)

    # -- the ASGI app ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"].rstrip("/") or "/", scope["method"]
        if path not in ("/metrics", "/health"):
            await _error(send, 404, "NOT_FOUND", "only /metrics and /health are served here")
            return
        if method not in ("GET", "HEAD"):
            await _error(send, 405, "METHOD_NOT_ALLOWED", f"{path} answers GET only")
            return
        if path == "/health":
            await self._health(send)
            return
        try:
            await self._allowed(scope)
        except DomainError as exc:
            await _error(send, exc.status_code, exc.code, exc.message)
            return
        await self._metrics(send)

    async def _allowed(self, scope: Scope) -> None:
        """As `serve` decides for its `/metrics`: open, or `read` on `metrics:*`."""
        orchestrator = self.orchestrator
        if orchestrator.settings.auth.metrics_open:
            return
        from control_center.gate import Gate

        gate = Gate(orchestrator.engine, orchestrator.settings)
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization")
        principal = await gate.authenticate(None if header is None else header.decode("latin-1"))
        await gate.authorize(principal, "read", "metrics:*")

    async def _metrics(self, send: Any) -> None:
        orchestrator = self.orchestrator
        with contextlib.suppress(Exception):  # (without the database: the last counts)
            async with asyncio.timeout(COUNTS_PATIENCE):
                await orchestrator.refresh_workflow_counts()
        await _respond(send, 200, CONTENT_TYPE_LATEST, orchestrator.metrics.render())

    async def _health(self, send: Any) -> None:
        scheduler = self.orchestrator.scheduler
        reachability = getattr(scheduler.store, "database", None)
        reachable = scheduler.healthy if reachability is None else reachability.up
        database = "reachable" if reachable else "unreachable"
        data = {
            "worker": scheduler.worker_id,
            "started": scheduler.started,
            "database": database,
            "running": scheduler.running,
        }
        if scheduler.started and scheduler.healthy:
            body = Envelope({"status": "healthy", **data})
            await _respond(send, 200, "application/json", msgspec.json.encode(body))
            return
        why = "not started yet"
        if scheduler.started:
            why = "the database does not answer" if not reachable else "see its log"
        await _error(send, 503, "UNAVAILABLE", f"the worker is unhealthy: {why}", data)


async def _respond(send: Any, status: int, content_type: str, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _error(send: Any, status: int, code: str, message: str, details: Any = None) -> None:
    body = ErrorBody(error=message, code=code, details=details)
    await _respond(send, status, "application/json", msgspec.json.encode(body))
