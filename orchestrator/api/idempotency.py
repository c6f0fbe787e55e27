"""`Idempotency-Key` on POST: a retried request gets the first answer, and starts nothing.

The first request with a key (per credential) is recorded as pending before it runs;
its answer is stored when it ends, before the client gets it (a 5xx is not kept, so a
retry runs again). A retry
with the same key and body gets that answer, with `Idempotent-Replayed: true`; one with a
different body gets 422, one while the first still runs gets 409. Keys are kept
`server.idempotency_ttl` seconds; a key left pending by a crash (the request never
ended) only `server.idempotency_pending_ttl` seconds, after which a retry runs. The
keys live in the store (`orchestrator/store/idempotency.py`). The body is read here,
before Litestar: past `server.max_body_bytes` it is refused (413) as it arrives, and
nothing is recorded. Routes that keep their own access (`opt["own_access"]`: the
account endpoints, whose answers carry tokens) are never recorded nor replayed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api.security import OWN_ACCESS
from orchestrator.store.idempotency import Answer, Held, IdempotencyKeys, RequestKey

HEADER = b"idempotency-key"
MAX_KEY = 200


def _reply(status: int, code: str, error: str) -> tuple[int, list[Any], bytes]:
    body = msgspec.json.encode({"success": False, "error": error, "code": code, "details": None})
    return status, [(b"content-type", b"application/json")], body


TOO_LARGE = _reply(
    413,
    "PAYLOAD_TOO_LARGE",
    "the request body is larger than the configured limit (server.max_body_bytes)",
)


class Idempotency:
    def __init__(
        self,
        keys: IdempotencyKeys,
        credential_valid: Callable[[str | None], Awaitable[bool]],
        max_body: int,
    ) -> None:
        self.keys = keys
        #: A stored answer is only replayed to a credential that is still valid.
        self.credential_valid = credential_valid
        #: `server.max_body_bytes`: this runs before Litestar, which would refuse more.
        self.max_body = max_body

    def __call__(self, app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            headers = dict(scope.get("headers", [])) if scope["type"] == ScopeType.HTTP else {}
            key = headers.get(HEADER, b"").decode("latin-1").strip()
            handler = scope.get("route_handler")
            own = handler is not None and handler.opt.get(OWN_ACCESS)
            if scope.get("method") != "POST" or not key or own:
                await app(scope, receive, send)
                return
            body, replay = await _read_body(receive, self.max_body)
            if body is None:
                await _send_reply(send, *TOO_LARGE)
                return
            credential = headers.get(b"authorization", b"")
            request = RequestKey(
                hashlib.sha256(credential).hexdigest(),
                key[:MAX_KEY],
                hashlib.sha256(scope["path"].encode() + b"\0" + body).hexdigest(),
            )
            claimed_at, held = await self.keys.claim(request)
            if held is not None:
                if await self.credential_valid(credential.decode("latin-1") or None):
                    await _send_reply(send, *_reply_of(held, request))
                else:  # let the guard answer (401) and audit it
                    await app(scope, replay, send)
                return
            try:
                captured = await _run(app, scope, replay)
            except BaseException:
                await self.keys.forget(request, claimed_at)
                raise
            # Recorded before the client sees the answer: a retry sent the moment it
            # arrives must get it replayed, not "still running". A 5xx is not kept.
            if captured.status is None or captured.status >= 500:
                await self.keys.forget(request, claimed_at)
            else:
                await self.keys.keep(request, claimed_at, _answer(captured))
            await send(
                {
                    "type": "http.response.start",
                    "status": captured.status or 500,
                    "headers": captured.headers,
                }
            )
            await send({"type": "http.response.body", "body": captured.body, "more_body": False})

        return middleware


def _reply_of(held: Held, request: RequestKey) -> tuple[int, list[Any], bytes]:
    """What a retry gets: the kept answer, or why there is none."""
    if held.request_hash != request.request_hash:
        return _reply(422, "INVALID_INPUT", "this Idempotency-Key was used for a different request")
    if held.answer is None:
        return _reply(409, "CONFLICT", "a request with this Idempotency-Key is still running")
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in held.answer.headers]
    headers.append((b"idempotent-replayed", b"true"))
    return held.answer.status_code, headers, held.answer.body.encode()


def _answer(captured: _Captured) -> Answer:
    assert captured.status is not None
    return Answer(
        captured.status,
        [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in captured.headers
            if k.lower() not in (b"content-length", b"date", b"x-request-id")
        ],
        captured.body.decode("utf-8", errors="replace"),
    )


class _Captured:
    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, Receive]:
    """Read the whole request body, and a `receive` that hands it on unchanged; None
    for a body past `limit` bytes, of which no more is read."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None, receive
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _run(app: ASGIApp, scope: Scope, receive: Receive) -> _Captured:
    """Run the request to its end, keeping the response instead of sending it."""
    captured = _Captured()

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.status = int(message["status"])
            captured.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            captured.body += message.get("body", b"")

    await app(scope, receive, capture)
    return captured


async def _send_reply(send: Send, status: int, headers: list[Any], body: bytes) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
