"""Header versioning (seed 003): `Accept: application/vnd.provisioning.v1+json`.

Plain JSON (or no Accept header) is v1; an Accept header that asks only for another
version of this API gets 406 with the envelope.
"""

from __future__ import annotations

import re

import msgspec
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

CURRENT = 1
VENDOR = re.compile(r"application/vnd\.provisioning\.v(\d+)\+json", re.IGNORECASE)


def requested_versions(accept: str) -> set[int]:
    return {int(v) for v in VENDOR.findall(accept)}


def versioning(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
            versions = requested_versions(accept)
            plain = any(
                part.split(";")[0].strip() in ("application/json", "*/*", "application/*")
                for part in accept.split(",")
            )
            if versions and CURRENT not in versions and not plain:
                body = msgspec.json.encode(
                    {
                        "success": False,
                        "error": f"API version(s) {sorted(versions)} are not served; "
                        f"ask for application/vnd.provisioning.v{CURRENT}+json",
                        "code": "NOT_ACCEPTABLE",
                        "details": {"supported": [CURRENT]},
                    }
                )
                start: HTTPResponseStartEvent = {
                    "type": "http.response.start",
                    "status": 406,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
                payload: HTTPResponseBodyEvent = {
                    "type": "http.response.body",
                    "body": body,
                    "more_body": False,
                }
                await send(start)
                await send(payload)
                return
        await app(scope, receive, send)

    return middleware
