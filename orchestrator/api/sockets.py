"""What every WebSocket of the orchestrator shares: authentication by a first message
and the refusal that closes a socket.

A socket opened without `?token=` must send `{"type": "auth", "token": …}` (or, as host
clients do, `{"type": "auth", "payload": {"token": …}}`) within
`server.ws_auth_timeout` seconds; the token is checked as a `?token=` is, for the
route's action. A socket waiting for that message costs a connection and proves nothing,
so one address may have `server.ws_unauthenticated_per_address` of them waiting at once,
across every socket route. A refusal is `{"type": "error", "code", "error"}`, then a
close with 1008 (policy violation).

A stream lives only as long as its credential: `while_allowed` checks it again every
`server.ws_recheck_interval` seconds and at the token's expiry, and a logout, a revoked
key or session, a disabled account or a policy that no longer allows the route ends
the stream with that refusal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import msgspec
import structlog
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from orchestrator.api.security import Security, access_of
from orchestrator.errors import DomainError
from orchestrator.http.access import Principal
from orchestrator.http.errors import Unauthorized

WS_POLICY_VIOLATION = 1008

log = structlog.get_logger(__name__)

Socket = WebSocket[Any, Any, Any]


class AuthPayload(msgspec.Struct, forbid_unknown_fields=True):
    """The `payload` of an auth message as host clients send it: `{"token": …}`."""

    token: str | None = None


class AuthMessage(msgspec.Struct):
    type: str
    token: str | None = None
    payload: AuthPayload | None = None

    @property
    def auth_token(self) -> str | None:
        """The token of `{"type": "auth", "token": …}` or `{…, "payload": {"token": …}}`."""
        return self.token or (self.payload.token if self.payload else None)


async def first_message_principal(
    socket: Socket, action: str, route: tuple[str, str], *, text: bool = False
) -> Principal | None:
    """The principal of the socket's first message, checked for `action` on `route`; on
    any failure the socket is refused (`text`: as `refuse` says) and None returned."""
    found = await first_message_credential(socket, action, route, text=text)
    return None if found is None else found[0]


async def first_message_credential(
    socket: Socket, action: str, route: tuple[str, str], *, text: bool = False
) -> tuple[Principal, str] | None:
    """`first_message_principal`, with the token it presented (for a stream that checks
    again later that the token still holds)."""
    security: Security = socket.app.state.security
    settings = security.orchestrator.settings.server
    waiting = security.unauthenticated_sockets
    address = socket.client.host if socket.client else ""
    if waiting[address] >= settings.ws_unauthenticated_per_address:
        await refuse(
            socket,
            "RATE_LIMITED",
            f"at most {settings.ws_unauthenticated_per_address} unauthenticated sockets per "
            "address; send ?token= or authenticate the ones already open",
            text=text,
        )
        return None
    waiting[address] += 1
    try:
        return await _first_message_credential(socket, security, action, route, text=text)
    finally:
        waiting[address] -= 1
        if not waiting[address]:
            del waiting[address]


async def _first_message_credential(
    socket: Socket, security: Security, action: str, route: tuple[str, str], *, text: bool
) -> tuple[Principal, str] | None:
    patience = security.orchestrator.settings.server.ws_auth_timeout
    try:
        with anyio.fail_after(patience):
            message = msgspec.json.decode(await socket.receive_text(), type=AuthMessage)
        token = message.auth_token
        if message.type != "auth" or not token:
            raise msgspec.ValidationError(
                "the first message must be {type: auth, token} or {type: auth, payload: {token}}"
            )
        return await security.check(socket.scope, f"Bearer {token}", action, route), token
    except (TimeoutError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        error = str(exc) or f"no auth message within {patience:g} s"
        await refuse(socket, "UNAUTHORIZED", f"authentication required: {error}", text=text)
    except DomainError as exc:
        await refuse(socket, exc.code, exc.message, text=text)
    except WebSocketDisconnect:
        pass
    return None


async def refuse(socket: Socket, code: str, error: str, *, text: bool = False) -> None:
    """Say why, then close. `text`: as a text message (where binary messages are the
    stream's own data, a VM's console)."""
    message = msgspec.json.encode({"type": "error", "code": code, "error": error})
    with anyio.move_on_after(1), contextlib.suppress(Exception):
        if text:
            await socket.send_text(message.decode())
        else:
            await socket.send_bytes(message)
    with anyio.move_on_after(1), contextlib.suppress(Exception):
        await socket.close(code=WS_POLICY_VIOLATION, reason=code)


async def cancel_when_closed(socket: Socket, scope: anyio.CancelScope) -> None:
    """Read (and drop) what the client sends until it goes, then cancel `scope`: a
    stream that only writes learns so that its client left."""
    try:
        while True:
            await socket.receive_text()
    except WebSocketDisconnect:
        pass
    scope.cancel()


@dataclass(frozen=True, slots=True)
class Credential:
    """Who a socket is, and the `Authorization` value that proved it."""

    principal: Principal
    header: str


async def socket_credential(
    socket: Socket, action: str, route: tuple[str, str], *, text: bool = False
) -> Credential | None:
    """The credential the guard (or a console's cookie check) let in, else the first
    message's (refused on failure, as `first_message_principal` says)."""
    access = access_of(socket.scope)
    if access.principal is not None and access.credential is not None:
        return Credential(access.principal, access.credential)
    found = await first_message_credential(socket, action, route, text=text)
    return None if found is None else Credential(found[0], f"Bearer {found[1]}")


async def watch_credential(
    socket: Socket,
    credential: Credential,
    action: str,
    scope: anyio.CancelScope,
    *,
    interval: float,
    resource: str | None = None,
    also: Callable[[Principal], None] | None = None,
    ended: Callable[[str], None] | None = None,
    text: bool = False,
) -> None:
    """Check `credential` every `interval` seconds and at the token's expiry: that it
    still authenticates, may still do `action` on `resource` (by default the socket's),
    and passes `also` (a route's own rules). When it fails, or cannot be checked (fail
    closed), refuse the socket with the reason, tell `ended`, and cancel `scope`."""
    security: Security = socket.app.state.security
    expires = credential.principal.expires_at
    while True:
        wait = interval
        if expires is not None:
            wait = min(wait, max(0.0, (expires - datetime.now(UTC)).total_seconds()))
        await anyio.sleep(wait)
        try:
            if expires is not None and datetime.now(UTC) >= expires:
                raise Unauthorized("the token has expired; log in again")
            principal = await security.still_allowed(
                socket.scope, credential.header, action, resource
            )
            if also is not None:
                also(principal)
        except DomainError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            log.exception("a socket's credential could not be checked again")
            code, message = "UNAUTHORIZED", f"the credential could not be checked again: {exc}"
        else:
            continue
        if ended is not None:
            ended(f"{code}: {message}")
        await refuse(socket, code, message, text=text)
        scope.cancel()
        return


async def while_allowed(
    socket: Socket,
    credential: Credential,
    action: str,
    stream: Callable[[], Awaitable[None]],
    *,
    text: bool = False,
) -> None:
    """Run `stream` while `credential` may still do `action` on the socket's resource
    (`watch_credential`, every `server.ws_recheck_interval` seconds); when it no longer
    may, the socket is refused with the reason and `stream` cancelled. What `stream`
    raises is raised here."""
    security: Security = socket.app.state.security
    interval = security.orchestrator.settings.server.ws_recheck_interval
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(
                watch_credential,
                socket,
                credential,
                action,
                group.cancel_scope,
                interval=interval,
                text=text,
            )
        )
        try:
            await stream()
        except Exception as exc:  # raised after the group, not wrapped in a group
            failure = exc
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
