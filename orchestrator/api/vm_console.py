"""A VM's serial console over a WebSocket (`/vms/{id}/console`, and under `/api/v1`).

Bytes both ways: what the client sends is typed into the guest's serial port, what the
guest writes comes back as binary messages, starting with the last
`HISTORY_BYTES` it wrote before (its boot banner, the prompt). Authentication is that of
`/ws` (`?token=`, or a first message `{"type": "auth", "token": …}`); the caller must be
allowed `console` on the VM (its owner or an administrator, by the default policies);
each user's WebSockets, event streams included, are capped together
(`server.ws_connections_per_user`, 10 as in seed 001); a VM has one console at a time.
The guest's bytes are binary messages; a refusal, or the VM's end, is a text message
`{"type": "error", "code", "error"}`, then a close.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect

from orchestrator.api.sockets import refuse, socket_credential, while_allowed
from orchestrator.api.vms import visible, vms_of
from orchestrator.errors import DomainError
from orchestrator.vms import Vms

HISTORY_BYTES = 16 * 1024
_CHUNK = 4096


@websocket("/vms/{vm_id:str}/console")
async def vm_console(socket: WebSocket[Any, Any, Any], vm_id: str) -> None:
    await socket.accept()
    vms = vms_of(socket.app.state)
    orchestrator = vms.orchestrator
    credential = await socket_credential(
        socket, "console", ("GET", "/vms/{vm_id}/console"), text=True
    )
    if credential is None:
        return
    principal = credential.principal
    try:
        vm = await visible(socket, vms, vm_id, "console")
    except DomainError as exc:
        await refuse(socket, exc.code, exc.message, text=True)
        return
    if vm.status != "running":
        await refuse(
            socket, "VM_INVALID_STATE", f"virtual machine '{vm_id}' is {vm.status}", text=True
        )
        return
    streams, user = orchestrator.events.streams, principal.user_id
    limit = orchestrator.settings.server.ws_connections_per_user
    if streams[user] >= limit:
        await refuse(socket, "RATE_LIMITED", f"at most {limit} WebSockets per user", text=True)
        return
    if vm_id in vms.consoles:
        await refuse(socket, "CONFLICT", f"the console of '{vm_id}' is already open", text=True)
        return
    streams[user] += 1
    vms.consoles.add(vm_id)
    try:
        await while_allowed(
            socket, credential, "console", lambda: _bridge(socket, vms, vm_id), text=True
        )
    finally:
        streams[user] -= 1
        vms.consoles.discard(vm_id)


async def _bridge(socket: WebSocket[Any, Any, Any], vms: Vms, vm_id: str) -> None:
    try:
        history, reader, writer = await vms.console(vm_id, HISTORY_BYTES)
    except OSError as exc:
        await refuse(
            socket, "VM_INVALID_STATE", f"the serial console does not answer: {exc}", text=True
        )
        return
    except DomainError as exc:
        await refuse(socket, exc.code, exc.message, text=True)
        return
    try:
        if history:
            await socket.send_bytes(history)
        async with anyio.create_task_group() as group:

            async def typed() -> None:
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        message = await socket.receive()
                        if message["type"] == "websocket.disconnect":
                            break
                        data, text = message.get("bytes"), message.get("text")
                        if isinstance(data, bytes) and data:
                            writer.write(data)
                        elif isinstance(text, str):
                            writer.write(text.encode())
                        await writer.drain()
                group.cancel_scope.cancel()

            group.start_soon(typed)
            while chunk := await reader.read(_CHUNK):
                await socket.send_bytes(chunk)
            # The guest's QEMU ended: say so, then close.
            await refuse(socket, "VM_STOPPED", "the virtual machine stopped", text=True)
            group.cancel_scope.cancel()
    except (WebSocketDisconnect, ConnectionError, anyio.ClosedResourceError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
