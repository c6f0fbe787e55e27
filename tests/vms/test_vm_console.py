"""A VM's serial console (WebSocket, `provisioning vm console`) and the client's `vms`
section (seed 001's SDK calls), on a real orchestrator process with real guests."""

from __future__ import annotations

import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from websockets.sync.client import connect

from orchestrator.client import ApiError, OrchestratorClient
from tests.servers import PROVISIONING, OrchestratorProcess, provision_user
from tests.vms import guest

# Real QEMU processes on a shared machine: a generous safety net per test, not a measure.
pytestmark = pytest.mark.timeout(900)

BOOT = 600.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[OrchestratorProcess]:
    data = tmp_path_factory.mktemp("vm-console")
    process = OrchestratorProcess(data, env={"PROVISIONING_PROVIDERS__QEMU__IMAGES": str(images)})
    try:
        yield process.start()
    finally:
        process.stop()
        guest.kill_all(data / "vms")


@pytest.fixture(scope="module")
def sdk(server: OrchestratorProcess) -> Iterator[OrchestratorClient]:
    """The project's client pointed at `…/api/v1`, as seed 001's SDK is."""
    with OrchestratorClient(f"{server.url}/api/v1", server.token) as client:
        yield client


def console_url(server: OrchestratorProcess, vm_id: str) -> str:
    return f"ws://127.0.0.1:{server.port}/api/v1/vms/{vm_id}/console"


def refusal(server: OrchestratorProcess, vm_id: str, token: str | None) -> dict:
    with connect(console_url(server, vm_id), open_timeout=30) as socket:
        if token is not None:
            socket.send(msgspec.json.encode({"type": "auth", "token": token}).decode())
        message = socket.recv(timeout=30)
    assert isinstance(message, str), message
    return msgspec.json.decode(message)


def test_the_seed_sdk_calls_work_through_the_client(server, sdk):
    created = sdk.vms.create({"name": "sdk-vm", "memory": 32, "disk": 1}, wait=True)
    vm_id = created["id"]
    try:
        assert created["status"] == "running", created
        assert vm_id in [vm["id"] for vm in sdk.vms.list()]
        assert sdk.vms.get(vm_id)["name"] == "sdk-vm"
        with pytest.raises(ApiError) as refused:
            sdk.vms.start(vm_id)
        assert (refused.value.status, refused.value.code) == (409, "VM_INVALID_STATE")
        assert sdk.vms.force_stop(vm_id, wait=True)["status"] == "stopped"
        # The console of a stopped VM, of an unknown one, and without credentials.
        assert refusal(server, vm_id, server.token)["code"] == "VM_INVALID_STATE"
        assert refusal(server, "nope", server.token)["code"] == "VM_NOT_FOUND"
        assert refusal(server, vm_id, "wrong")["code"] == "UNAUTHORIZED"
        other = provision_user(server.data_dir, server.env, "bob", ["operator"])
        assert refusal(server, vm_id, other)["code"] == "VM_NOT_FOUND"
        assert sdk.vms.update(vm_id, {"cpu": 2}, wait=True)["cpu"] == 2
        assert sdk.vms.start(vm_id, wait=True)["status"] == "running"
    finally:
        sdk.vms.delete(vm_id, wait=True)
    with pytest.raises(ApiError) as gone:
        sdk.vms.get(vm_id)
    assert (gone.value.status, gone.value.code) == (404, "VM_NOT_FOUND")


def read_until(socket, marker: bytes, patience: float = BOOT) -> bytes:
    seen = b""
    deadline = time.monotonic() + patience
    while marker not in seen:
        message = socket.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(message, bytes), message
        seen += message
    return seen


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_console_shows_the_guest_and_takes_what_is_typed(server, sdk):
    vm_id = sdk.vms.create({"name": "console", "memory": 256, "disk": 1, "os": "busybox"})["id"]
    try:
        deadline = time.monotonic() + BOOT
        while sdk.vms.get(vm_id)["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        with connect(console_url(server, vm_id), open_timeout=30) as socket:
            socket.send(msgspec.json.encode({"type": "auth", "token": server.token}).decode())
            assert b"GUEST-READY" in read_until(socket, b"GUEST-READY")  # history, or live
            socket.send(b"echo typed-$((6 * 7))\n")
            read_until(socket, b"typed-42", 120)  # the shell ran it: 6 * 7 was computed
            # One console at a time.
            assert refusal(server, vm_id, server.token)["code"] == "CONFLICT"
        # `provisioning vm console`: type a command, read its answer, detach with Ctrl-].
        cli = subprocess.Popen(
            [PROVISIONING, "vm", "console", vm_id],
            env={**server.env, "PROVISIONING_URL": server.url, "PROVISIONING_TOKEN": server.token},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert cli.stdin is not None and cli.stdout is not None
            cli.stdin.write(b"echo from-cli-$((6 * 7))\n")
            cli.stdin.flush()
            seen, deadline = b"", time.monotonic() + 120
            while b"from-cli-42" not in seen:
                assert time.monotonic() < deadline, seen
                ready, _, _ = select.select([cli.stdout], [], [], 1)
                if ready:
                    seen += os.read(cli.stdout.fileno(), 4096)
            cli.stdin.write(b"\x1d")
            cli.stdin.flush()
            assert cli.wait(60) == 0
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.communicate()  # waits, and closes its pipes
    finally:
        sdk.vms.delete(vm_id, wait=True)
    assert not guest.running_pids(server.data_dir / "vms")
