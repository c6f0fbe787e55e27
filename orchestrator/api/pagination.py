"""`limit`/`offset` paging with `X-Total-Count`, `X-Limit`, `X-Offset` and `Link` headers."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from litestar import Request

from orchestrator.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset: must be 0 or more, got {offset}")


def page_headers(
    request: Request[Any, Any, Any], total: int, limit: int, offset: int
) -> dict[str, str]:
    headers = {"X-Total-Count": str(total), "X-Limit": str(limit), "X-Offset": str(offset)}
    if offset + limit < total:
        query = dict(request.query_params)
        query.update({"offset": str(offset + limit), "limit": str(limit)})
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return headers
