"""Seed 001's VM API on a real orchestrator process, with real QEMU guests.

`os: none` guests (a blank disk: the firmware finds nothing to boot and waits) start in
a fraction of a second; the busybox guest boots a Debian kernel under TCG, tens of
seconds on a busy machine (marked slow).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.qemu._process import start_ticks
from tests.servers import OrchestratorProcess, provision_user
from tests.vms import guest

# Real QEMU processes on a shared machine: a generous safety net per test, not a measure.
pytestmark = pytest.mark.timeout(900)

#: Safety nets, not measures.
QUICK, BOOT = 120.0, 600.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: Path) -> Iterator[OrchestratorProcess]:
    data = tmp_path_factory.mktemp("vm-api")
    process = OrchestratorProcess(
        data,
        env={
            "PROVISIONING_PROVIDERS__QEMU__IMAGES": str(images),
            "PROVISIONING_PROVIDERS__QEMU__STOP_GRACE": "120",
            "PROVISIONING_EXECUTOR__RETRY__MAX_ATTEMPTS": "1",
        },
    )
    try:
        yield process.start()
    finally:
        process.stop()
        guest.kill_all(data / "vms")


@pytest.fixture(scope="module")
def client(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def alice(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    """Another operator: an ordinary user with a quota."""
    key = provision_user(server.data_dir, server.env, "alice", ["operator"])
    with httpx.Client(
        base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        yield http


def vm_dir(server: OrchestratorProcess) -> Path:
    return server.data_dir / "vms"


def data(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return str(body["error"])


def wait_status(client: httpx.Client, vm_id: str, *wanted: str, patience: float = QUICK) -> dict:
    """Poll the VM until its status is one of `wanted` (or it is gone, for `gone`)."""
    deadline = time.monotonic() + patience
    seen = None
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/vms/{vm_id}")
        if response.status_code == 404 and "gone" in wanted:
            return {}
        seen = data(response, 200)
        if seen["status"] in wanted:
            return seen
        time.sleep(0.1)
    raise TimeoutError(f"vm {vm_id} is {seen and seen['status']}, not {wanted}")


def alive(pid: int | None) -> bool:
    return pid is not None and start_ticks(pid) is not None


@pytest.mark.both_stores
def test_a_vm_is_created_at_once_then_runs_stops_and_is_deleted(server, client):
    body = {"name": "test-vm", "cpu": 1, "memory": 64, "disk": 1, "os": "none"}
    created = data(client.post("/api/v1/vms", json=body), 201)
    assert created["status"] == "creating" and created["workflow_id"]
    assert {k: created[k] for k in body} == body
    vm_id = created["id"]
    running = wait_status(client, vm_id, "running", "error")
    assert running["status"] == "running", running
    pid = guest.running_pids(vm_dir(server))[vm_id]
    assert alive(pid)
    metrics = client.get("/metrics").text
    running_gauge = next(
        line
        for line in metrics.splitlines()
        if line.startswith('orchestrator_vms{status="running"}')
    )
    assert float(running_gauge.split()[-1]) >= 1
    assert 'orchestrator_vms{status="deleting"}' in metrics
    listed = data(client.get("/vms", params={"status": "running"}), 200)
    assert vm_id in [vm["id"] for vm in listed]
    assert vm_id not in [vm["id"] for vm in data(client.get("/vms?status=stopped"), 200)]
    message = error(client.post(f"/api/v1/vms/{vm_id}/start"), 409, "VM_INVALID_STATE")
    assert "is running: start needs it stopped or error" in message
    stopped = data(client.post(f"/api/v1/vms/{vm_id}/force-stop", json={"wait": True}), 202)
    assert stopped["status"] == "stopped" and not alive(pid)
    renamed = data(client.put(f"/vms/{vm_id}", json={"name": "renamed", "memory": 96}), 202)
    assert (renamed["name"], renamed["memory"]) == ("renamed", 96)
    deleted = data(client.delete(f"/api/v1/vms/{vm_id}"), 202)
    assert deleted["status"] == "deleting"
    # Every read on the way out says deleting, then 404: never the `error` of a VM whose
    # directory went before its row (a read racing the delete's end).
    seen = wait_status(client, vm_id, "gone", "stopped", "running", "error")
    assert seen == {}, seen
    assert error(client.get(f"/api/v1/vms/{vm_id}"), 404, "VM_NOT_FOUND")
    assert not (vm_dir(server) / vm_id).exists()


def test_bad_input_is_a_clear_4xx_and_leaves_nothing(server, client):
    before = sorted(p.name for p in vm_dir(server).iterdir()) if vm_dir(server).exists() else []
    good = {"name": "ok", "cpu": 1, "memory": 64, "disk": 1, "os": "none"}
    cases = [
        ({"cpu": -1}, "vm.cpu"),
        ({"cpu": 100000}, "vm.cpu"),
        ({"memory": 0}, "vm.memory"),
        ({"memory": 10**9}, "vm.memory"),
        ({"disk": -5}, "vm.disk"),
        ({"disk": 10**7}, "vm.disk"),
        ({"name": "a/b"}, "vm.name"),
        ({"name": ""}, "vm.name"),
        ({"os": "../etc"}, "vm.os"),
    ]
    for change, field in cases:
        message = error(client.post("/api/v1/vms", json={**good, **change}), 422, "INVALID_INPUT")
        assert message.startswith(field), (change, message)
    message = error(
        client.post("/api/v1/vms", json={**good, "os": "ubuntu20.04"}), 422, "INVALID_INPUT"
    )
    assert "unknown image 'ubuntu20.04'; available: busybox, none" in message
    for raw in (
        b'{"name": "a\\u0000b", "os": "none"}',
        b'{"name": "x", "cpu": "two"}',
        b'{"name": "x", "colour": "red"}',
        b"{not json",
    ):
        response = client.post(
            "/api/v1/vms", content=raw, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (raw, response.text)
        assert response.json()["code"] == "INVALID_INPUT", response.text
    assert error(client.get("/api/v1/vms/nope"), 404, "VM_NOT_FOUND")
    assert error(client.post("/api/v1/vms/nope/start"), 404, "VM_NOT_FOUND")
    after = sorted(p.name for p in vm_dir(server).iterdir()) if vm_dir(server).exists() else []
    assert after == before


def test_a_vm_busy_with_a_change_refuses_another(server, client):
    body = {"name": "busy", "memory": 64, "disk": 1, "os": "none"}
    vm_id = data(client.post("/api/v1/vms", json=body), 201)["id"]
    response = client.delete(f"/api/v1/vms/{vm_id}")
    if response.status_code == 409:  # still creating (the usual case)
        assert "is creating (workflow" in error(response, 409, "VM_INVALID_STATE")
    wait_status(client, vm_id, "running", "gone", "error")
    client.delete(f"/api/v1/vms/{vm_id}", params={"wait": "true"})
    wait_status(client, vm_id, "gone")


@pytest.mark.both_stores
def test_a_user_sees_only_their_vms_within_a_quota_of_five(server, client, alice):
    body = {"name": "mine", "memory": 32, "disk": 1, "os": "none"}
    ids = [data(alice.post("/api/v1/vms", json=body), 201)["id"] for _ in range(5)]
    try:
        message = error(alice.post("/api/v1/vms", json=body), 409, "QUOTA_EXCEEDED")
        assert "you have 5 virtual machines, at most 5 per user" in message
        theirs = {vm["id"] for vm in data(alice.get("/api/v1/vms"), 200)}
        assert set(ids) <= theirs
        # The test operator is another ordinary user: alice's VMs do not exist for it.
        listed = client.get("/api/v1/vms")
        assert not set(ids) & {vm["id"] for vm in data(listed, 200)}
        assert int(listed.headers["X-Total-Count"]) == len(data(listed, 200))
        assert error(client.get(f"/api/v1/vms/{ids[0]}"), 404, "VM_NOT_FOUND")
        assert error(client.post(f"/api/v1/vms/{ids[0]}/stop"), 404, "VM_NOT_FOUND")
        assert error(client.delete(f"/api/v1/vms/{ids[0]}"), 404, "VM_NOT_FOUND")
        for vm_id in ids:
            wait_status(alice, vm_id, "running", "error")
    finally:
        for vm_id in ids:
            wait_status(alice, vm_id, "running", "stopped", "error", "gone")
            alice.delete(f"/api/v1/vms/{vm_id}")
        for vm_id in ids:
            wait_status(alice, vm_id, "gone")
    assert not guest.running_pids(vm_dir(server))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_busybox_guest_lives_through_the_api(server, client):
    body = {"name": "guest", "cpu": 1, "memory": 256, "disk": 1, "os": "busybox"}
    vm_id = data(client.post("/api/v1/vms", json=body), 201)["id"]
    serial = vm_dir(server) / vm_id / "serial.log"

    def booted() -> None:
        deadline = time.monotonic() + BOOT
        while not (serial.exists() and guest.READY in serial.read_bytes()):
            assert time.monotonic() < deadline, "the guest did not boot"
            time.sleep(0.2)

    assert wait_status(client, vm_id, "running", "error")["status"] == "running"
    pid = guest.running_pids(vm_dir(server))[vm_id]
    booted()
    stopped = data(client.post(f"/api/v1/vms/{vm_id}/stop", json={"wait": True}), 202)
    # The guest powered itself off on the ACPI request, well within the 120 s grace.
    assert stopped["status"] == "stopped" and not alive(pid)
    assert error(client.post(f"/api/v1/vms/{vm_id}/stop"), 409, "VM_INVALID_STATE")
    serial.write_bytes(b"")
    started = data(client.post(f"/api/v1/vms/{vm_id}/start", json={"wait": True}), 202)
    assert started["status"] == "running"
    second = guest.running_pids(vm_dir(server))[vm_id]
    assert alive(second) and second != pid
    booted()
    restarted = data(client.post(f"/api/v1/vms/{vm_id}/restart", json={"wait": True}), 202)
    assert restarted["status"] == "running"
    third = guest.running_pids(vm_dir(server))[vm_id]
    assert alive(third) and not alive(second)
    data(client.delete(f"/api/v1/vms/{vm_id}", params={"wait": "true"}), 202)
    assert error(client.get(f"/api/v1/vms/{vm_id}"), 404, "VM_NOT_FOUND")
    assert not alive(third) and not (vm_dir(server) / vm_id).exists()
