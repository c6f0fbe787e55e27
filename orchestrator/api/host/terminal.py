"""Vapor's `/ws/terminal`: an interactive shell on the orchestrator's host.

A shell there is root on the machine that holds the orchestrator's keys, so:

- **off by default**: unless the host instance's `terminal.enabled` is true, the upgrade
  is answered 403 `TERMINAL_DISABLED` (nothing accepted, no credential asked);
- **administrators only, with MFA**: the caller must have the `admin` role (a shell
  there can mint any token: granting it is granting admin), be allowed `open` on
  `host:terminal` by the policies (so a policy can still deny it, by IP for instance),
  and present a session token of a user with TOTP on (`Principal.mfa_verified`): an API
  key, or a session of a user without MFA, is refused (`MFA_REQUIRED`);
- **checked while it lasts**: every `terminal.recheck_interval` seconds (2), and at the
  token's expiry, the token is authenticated and authorized again (one indexed query),
  so a logout, a revoked session or API key, a disabled account, a lost role or a policy
  change ends the session — whichever process made the change: `{"type": "error",
  "code": "UNAUTHORIZED", …}`, then a close with 1008;
- **audited**: `terminal.start` (shell, size, pid) and `terminal.end` (why, exit status,
  bytes in and out, duration) on `host:terminal`, with a session id linking them;
  refusals as `terminal.start`, `denied`.

Protocol (JSON messages, as the other host streams send them): after the auth message
(or `?token=`, or an `Authorization` header), `{"type": "subscribe", "payload": {"cols":
80, "rows": 24, "shell": "/bin/bash"}}` (`shell`: the configured one, or one listed in
/etc/shells); then `{"type": "input", "data": "ls -la\\n"}` and `{"type": "resize",
"payload": {"cols", "rows"}}` from the client, `{"type": "output", "data": …}` from the
shell, and `{"type": "exit", "code": n}` then a close (1000) when the shell ends. When
the socket closes the shell's processes go too (`providers.host._terminal.Pty.close`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import msgspec
import structlog
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from orchestrator.api.host.common import host_instance
from orchestrator.api.security import OWN_ACCESS, Security, access_of
from orchestrator.api.sockets import (
    Credential,
    first_message_credential,
    refuse,
    watch_credential,
)
from orchestrator.errors import DomainError
from orchestrator.http.access import AuditEntry, Principal
from orchestrator.http.errors import Forbidden
from orchestrator.service import Orchestrator
from providers.base import ProviderError
from providers.host._terminal import Pty, TerminalConfig, TerminalSize

log = structlog.get_logger(__name__)

ROUTE = ("GET", "/ws/terminal")
ACTION = "open"
RESOURCE = "host:terminal"
ADMIN = "admin"

Socket = WebSocket[Any, Any, Any]


class MfaRequired(Forbidden):
    code = "MFA_REQUIRED"


class Subscription(TerminalSize, forbid_unknown_fields=True):
    shell: str | None = None


class ClientMessage(msgspec.Struct):
    type: str
    data: str | None = None
    payload: Any = None
    #: A resize's size may come at the top level too (`{type: resize, cols, rows}`).
    cols: int | None = None
    rows: int | None = None

    def size(self) -> TerminalSize:
        if self.payload is not None:
            return msgspec.convert(self.payload, TerminalSize)
        return msgspec.convert({"cols": self.cols or 80, "rows": self.rows or 24}, TerminalSize)


@dataclass(slots=True)
class Ending:
    reason: str = "the client closed the socket"
    exit_code: int | None = None

    def end(self, reason: str) -> None:
        self.reason = reason


def _required(principal: Principal) -> None:
    """The terminal's own rules, beyond the policies (see the module's note)."""
    if ADMIN not in principal.roles:
        raise Forbidden(f"forbidden: the terminal is for administrators ('{ADMIN}' role) only")
    if not principal.mfa_verified:
        how = (
            "an API key never is"
            if principal.via == "api_key"
            else "enroll (POST /auth/mfa/enroll, /auth/mfa/verify) and log in again with a code"
        )
        raise MfaRequired(
            f"the terminal needs a session token of a user with multi-factor authentication: {how}"
        )


@websocket("/ws/terminal", opt={OWN_ACCESS: True})
async def terminal_session(socket: Socket) -> None:
    orchestrator: Orchestrator = socket.app.state.orchestrator
    security: Security = socket.app.state.security
    try:
        instance = host_instance(orchestrator.catalog, socket.query_params.get("instance"))
    except DomainError as exc:
        await _deny(socket, exc.status_code, exc.code, exc.message)
        return
    config: TerminalConfig = orchestrator.catalog.providers[instance].terminal  # type: ignore[attr-defined]
    if not config.enabled:
        await _deny(
            socket,
            403,
            "TERMINAL_DISABLED",
            f"the terminal is off: set terminal.enabled = true in [providers.{instance}] "
            "(docs/host.md) to allow it",
        )
        return
    await socket.accept()
    access = access_of(socket.scope)
    access.action, access.resource = "host:open", RESOURCE
    found = await _authenticated(socket, security)
    if found is None:
        return
    principal, header = found
    streams = orchestrator.events.streams
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[principal.user_id] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} streams per user")
        return
    streams[principal.user_id] += 1
    try:
        await _session(socket, security, config, principal, header, instance)
    except WebSocketDisconnect:
        pass
    finally:
        streams[principal.user_id] -= 1


async def _deny(socket: Socket, status: int, code: str, message: str) -> None:
    """Refuse the upgrade itself: an HTTP answer with the error envelope where the server
    can send one (uvicorn can), else a close before accepting (a 403)."""
    if "websocket.http.response" in (socket.scope.get("extensions") or {}):
        body = msgspec.json.encode({"success": False, "error": message, "code": code})
        start: Any = {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
        await socket.send(start)
        end: Any = {"type": "websocket.http.response.body", "body": body}
        await socket.send(end)
        return
    await socket.close(code=1008, reason=code)


async def _authenticated(socket: Socket, security: Security) -> tuple[Principal, str] | None:
    """The caller and the header to check again later: from `Authorization`, `?token=`
    or the first message; refused (and audited) unless every rule lets it in."""
    header = socket.headers.get("authorization")
    token = socket.query_params.get("token")
    if header is None and token:
        header = f"Bearer {token}"
    try:
        if header is not None:
            principal = await security.check(socket.scope, header, ACTION, ROUTE)
        else:
            found = await first_message_credential(socket, ACTION, ROUTE)
            if found is None:
                await _audit_refusal(socket, security)
                return None
            principal, header = found[0], f"Bearer {found[1]}"
        _required(principal)
    except DomainError as exc:
        access_of(socket.scope).error = exc
        await _audit_refusal(socket, security)
        await refuse(socket, exc.code, exc.message)
        return None
    return principal, header


async def _audit_refusal(socket: Socket, security: Security) -> None:
    access = access_of(socket.scope)
    error = access.error
    details = {"app": "orchestrator", "path": socket.scope.get("path")}
    if error is not None:
        details |= {"code": error.code, "error": error.message}
    principal = access.principal
    await _record(
        security,
        socket,
        AuditEntry(
            action="terminal.start",
            resource=RESOURCE,
            result="denied",
            user_id=principal.user_id if principal else None,
            details=details,
            ip=_ip(socket),
        ),
    )


async def _session(
    socket: Socket,
    security: Security,
    config: TerminalConfig,
    principal: Principal,
    header: str,
    instance: str,
) -> None:
    subscription = await _subscription(socket, security)
    if subscription is None:
        return
    try:
        shell = config.shell_for(subscription.shell)
        pty = await Pty.spawn(shell, subscription)
    except (ValueError, ProviderError) as exc:
        code = "INVALID_INPUT" if isinstance(exc, ValueError) else "TERMINAL_UNAVAILABLE"
        await refuse(socket, code, str(exc))
        return
    session_id = f"term-{secrets.token_hex(8)}"
    started = time.monotonic()
    base = {"app": "orchestrator", "session_id": session_id, "instance": instance}
    await _record(
        security,
        socket,
        AuditEntry(
            action="terminal.start",
            resource=RESOURCE,
            result="success",
            user_id=principal.user_id,
            details={
                **base,
                "shell": shell,
                "cols": subscription.cols,
                "rows": subscription.rows,
                "pid": pty.pid,
                "via": principal.via,
            },
            ip=_ip(socket),
        ),
    )
    ending = Ending()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(_output, socket, pty, ending, group.cancel_scope)
            group.start_soon(_input, socket, pty, group.cancel_scope)
            group.start_soon(_reap, pty)
            group.start_soon(
                partial(
                    watch_credential,
                    socket,
                    Credential(principal, header),
                    ACTION,
                    group.cancel_scope,
                    interval=config.recheck_interval,
                    resource=RESOURCE,
                    also=_required,
                    ended=ending.end,
                )
            )
    finally:
        with anyio.CancelScope(shield=True):
            status = await pty.close()
            if ending.exit_code is None:
                ending.exit_code = status
            await _record(
                security,
                socket,
                AuditEntry(
                    action="terminal.end",
                    resource=RESOURCE,
                    result="success",
                    user_id=principal.user_id,
                    details={
                        **base,
                        "reason": ending.reason,
                        "exit_code": ending.exit_code,
                        "bytes_in": pty.bytes_in,
                        "bytes_out": pty.bytes_out,
                        "duration_s": round(time.monotonic() - started, 3),
                    },
                    ip=_ip(socket),
                ),
            )


async def _subscription(socket: Socket, security: Security) -> Subscription | None:
    patience = security.orchestrator.settings.server.ws_auth_timeout
    try:
        with anyio.fail_after(patience):
            message = msgspec.json.decode(await _receive(socket), type=ClientMessage)
        if message.type != "subscribe":
            raise msgspec.ValidationError("the first message after auth must be a subscribe")
        return msgspec.convert(message.payload or {}, Subscription)
    except TimeoutError:
        await refuse(socket, "INVALID_INPUT", f"no subscribe message within {patience:g} s")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        await refuse(socket, "INVALID_INPUT", f"not a subscription: {exc}")
    return None


async def _receive(socket: Socket) -> str | bytes:
    message = await socket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(detail="disconnected")
    data: str | bytes | None = message.get("text") or message.get("bytes")  # type: ignore[assignment]
    return data or b""


async def _send(socket: Socket, body: dict[str, Any]) -> None:
    await socket.send_bytes(msgspec.json.encode(body))


async def _output(socket: Socket, pty: Pty, ending: Ending, scope: anyio.CancelScope) -> None:
    """What the shell writes, to the client; at its end, the exit status and a close."""
    try:
        while (text := await pty.read()) is not None:
            await _send(socket, {"type": "output", "data": text})
    except Exception:  # the client went: `_input` says so, the session ends
        scope.cancel()
        return
    ending.exit_code = await pty.wait()
    ending.reason = "the shell exited"
    with contextlib.suppress(Exception):
        await _send(socket, {"type": "exit", "code": ending.exit_code})
        await socket.close()
    scope.cancel()


async def _input(socket: Socket, pty: Pty, scope: anyio.CancelScope) -> None:
    """What the client types (and resizes), to the terminal, until it goes."""
    try:
        while True:
            raw = await _receive(socket)
            try:
                message = msgspec.json.decode(raw, type=ClientMessage)
                if message.type == "input":
                    await pty.write((message.data or "").encode())
                elif message.type == "resize":
                    pty.resize(message.size())
                else:
                    raise msgspec.ValidationError(f"unknown message type '{message.type}'")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await _send(socket, {"type": "error", "code": "INVALID_INPUT", "error": str(exc)})
    except Exception:  # WebSocketDisconnect, or a send to a socket that closed
        scope.cancel()


async def _reap(pty: Pty) -> None:
    """Once the shell exits, what it left running goes too (so the terminal closes and
    its last output reaches the client)."""
    await pty.wait()
    await pty.end_processes()


async def _record(security: Security, socket: Socket, entry: AuditEntry) -> None:
    try:
        with anyio.fail_after(10):
            await security.gate.record(entry)
    except Exception:
        log.exception("audit record failed", action=entry.action, path=socket.scope.get("path"))


def _ip(socket: Socket) -> str | None:
    client = socket.scope.get("client")
    return str(client[0]) if client else None
