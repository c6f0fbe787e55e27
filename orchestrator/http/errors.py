"""The access errors, and the one place errors become HTTP responses (both apps).

Every `DomainError` names its status and code; the handlers below turn it, Litestar's
own exceptions and anything unexpected into the error envelope. A 500 never carries a
stack trace.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from litestar import Litestar, Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import ExceptionHandlersMap

from orchestrator.errors import DomainError
from orchestrator.http.envelope import ErrorBody

log = structlog.get_logger(__name__)


class Unauthorized(DomainError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    """Authenticated, but no policy allows the action (or one denies it)."""

    status_code = 403
    code = "FORBIDDEN"


class RateLimited(DomainError):
    status_code = 429
    code = "RATE_LIMITED"


CODES = {
    400: "INVALID_INPUT",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "INVALID_INPUT",
    429: "RATE_LIMITED",
}


#: Every error any endpoint may answer, all in the envelope: documented once, here.
ERROR_RESPONSES: dict[int, ResponseSpec] = {
    status: ResponseSpec(
        data_container=ErrorBody,
        description=f"{HTTPStatus(status).phrase}: `code` {code}",
        generate_examples=False,
    )
    for status, code in {**CODES, 500: "INTERNAL_ERROR"}.items()
    if status != 405
}


def document_errors(app: Litestar) -> None:
    """Give every HTTP route of the app the envelope's error responses in OpenAPI."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if isinstance(handler, HTTPRouteHandler):
                handler.responses = {**ERROR_RESPONSES, **(handler.responses or {})}


def error_response(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    return Response(ErrorBody(error=message, code=code, details=details), status_code=status)


def _domain(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    return error_response(exc.status_code, exc.code, exc.message, exc.details)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    problems = []
    for item in extra:
        if not isinstance(item, dict):
            continue
        key = item.get("key")
        message = str(item.get("message", ""))
        problems.append(f"{key}: {message}" if key and key != "data" else message)
    text = "; ".join(problems) or str(exc.detail)
    return error_response(422, "INVALID_INPUT", f"invalid request: {text}", extra or None)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    code = CODES.get(status, "INTERNAL_ERROR" if status >= 500 else "INVALID_INPUT")
    message = str(exc.detail)
    headers = dict(exc.headers or {})
    if isinstance(exc.__cause__, SerializationException):
        message = f"the request body could not be decoded: {message}"
    elif status == 413:
        message = "the request body is larger than the configured limit (server.max_body_bytes)"
    response = error_response(status, code, message, None)
    response.headers.update(headers)  # Allow on 405, Retry-After on 429, …
    return response


def _too_deep(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # The last line of defence: the request checks (`orchestrator.http.limits`) refuse
    # deep bodies before anything recurses; one that got past them is still the
    # client's, and its traceback would only fill the log.
    log.warning("request too deeply nested", path=request.url.path, error=str(exc))
    return error_response(
        422,
        "INVALID_INPUT",
        "the request nests too deeply to be processed (server.max_body_depth)",
    )


def _internal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unhandled error", path=request.url.path, error_type=type(exc).__name__)
    return error_response(500, "INTERNAL_ERROR", "internal server error; see the server log")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    DomainError: _domain,
    ValidationException: _validation,
    HTTPException: _http,
    RecursionError: _too_deep,
    Exception: _internal,
}
