"""The audit trail and rate-limit headers, added around every route.

Every mutating request (POST, PUT, PATCH, DELETE; but a POST whose handler says it
changes nothing, `CHANGES_NOTHING`), and every request refused with 401, 403 or 429
whatever its method, writes one audit record before its response starts:
`success` for 2xx/3xx, `denied` for 401/403/429, `failure` for other 4xx, `error` for
5xx. Handlers name the action and resource (`audit_as`, `check`); otherwise the
method and path stand in. The record's details hold the status, the error code and
message, and what the handler added; never a request body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from litestar import Request, Response
from litestar.enums import ScopeType
from litestar.types import ASGIApp, ExceptionHandlersMap, Message, Receive, Scope, Send

from control_center.audit import record_audit
from control_center.request_context import NOTE_KEY, AuditNote, note_of, services
from control_center.secret_keys import keys_for
from orchestrator.errors import DomainError
from orchestrator.http.access import MUTATING, REFUSED, result_of
from orchestrator.http.errors import CODES, EXCEPTION_HANDLERS

log = structlog.get_logger(__name__)

#: A route handler's `opt` key: its POST changes nothing (a check, such as
#: `POST /policies/validate`), so only its refusals are audited, like a GET's.
CHANGES_NOTHING = "changes_nothing"


def audit_middleware(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        record = AuditNote()
        scope.setdefault("state", {})[NOTE_KEY] = record  # type: ignore[typeddict-item]

        async def send_noted(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if record.ratelimit is not None:
                    headers += [
                        (name.lower().encode("latin-1"), value.encode("latin-1"))
                        for name, value in record.ratelimit.headers().items()
                    ]
                message = {**message, "headers": headers}  # type: ignore[typeddict-item]
                status = int(message["status"])  # type: ignore[typeddict-item]
                if _changes(scope) or status in REFUSED:
                    await _write(scope, record, status)
            await send(message)

        await app(scope, receive, send_noted)

    return middleware


def _changes(scope: Scope) -> bool:
    handler = scope.get("route_handler")
    quiet = handler is not None and bool(handler.opt.get(CHANGES_NOTHING))
    return scope.get("method") in MUTATING and not quiet


async def _write(scope: Scope, record: AuditNote, status: int) -> None:
    method = str(scope.get("method", ""))
    path = str(scope.get("path", ""))
    details: dict[str, Any] = {"method": method, "path": path, "status": status}
    if status >= 400:
        details["code"] = record.error_code or CODES.get(status, "INTERNAL_ERROR")
        if record.error_message:
            details["error"] = record.error_message
    details.update(record.details)
    client = scope.get("client")
    try:
        service = services(scope["app"].state)
        await record_audit(
            service.db,
            key=keys_for(service.settings).audit,
            action=record.action or f"{method} {path}",
            resource=record.resource or path,
            result=result_of(status),
            user_id=record.user_id,
            details=details,
            ip=client[0] if client else None,
        )
    except Exception:
        log.exception("could not write the audit record", method=method, path=path)


def _noting(handler: Callable[..., Response[Any]]) -> Callable[..., Response[Any]]:
    """Keep the error's code and message for the audit record, then answer as usual."""

    def handle(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
        record = note_of(request.scope)
        if record is not None and isinstance(exc, DomainError):
            record.error_code, record.error_message = exc.code, exc.message
            if isinstance(exc.details, dict) and "reason" in exc.details:
                record.details["reason"] = exc.details["reason"]
        return handler(request, exc)

    return handle


EXCEPTION_HANDLERS_AUDITED: ExceptionHandlersMap = {
    kind: _noting(handler)  # type: ignore[arg-type]
    for kind, handler in EXCEPTION_HANDLERS.items()
}
