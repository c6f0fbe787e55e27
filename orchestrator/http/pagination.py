"""`limit`/`offset` paging with `X-Total-Count`, `X-Limit`, `X-Offset` and `Link` headers;
`page` (1-based, of `limit` items) where a client pages that way."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request
from litestar.params import QueryParameter

from orchestrator.errors import InvalidInput

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
#: Past any table's size, and within what every database's integers hold.
MAX_OFFSET = 2**53

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)]
Offset = Annotated[int, QueryParameter(ge=0, le=MAX_OFFSET)]
Page = Annotated[int | None, QueryParameter(ge=1, le=2**31)]


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}, got {limit}")
    if offset < 0:
        raise InvalidInput(f"offset: must be 0 or more, got {offset}")


def offset_of_page(page: int | None, limit: int, offset: int) -> int:
    """The offset of page `page` (1-based) of `limit` items; `offset` without a page (a
    page, when given, says where the listing starts: it wins over `offset`)."""
    if page is None:
        return offset
    if page < 1:
        raise InvalidInput(f"page: must be 1 or more, got {page}")
    return min((page - 1) * limit, MAX_OFFSET)


def page_headers(
    request: Request[Any, Any, Any], total: int, limit: int, offset: int
) -> dict[str, str]:
    headers = {"X-Total-Count": str(total), "X-Limit": str(limit), "X-Offset": str(offset)}
    if offset + limit < total:
        query = dict(request.query_params)
        if "page" in query:  # the next page, in the client's own terms
            query.update({"page": str(offset // limit + 2), "limit": str(limit)})
        else:
            query.update({"offset": str(offset + limit), "limit": str(limit)})
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return headers
