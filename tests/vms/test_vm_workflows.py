"""VM changes as workflows: a failed create is undone, a checkpoint's rollback deletes
the VMs created since (and reports a delete as irreversible), and a host without QEMU
answers NO_HYPERVISOR."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.servers import OrchestratorProcess, provision_user
from tests.vms import guest

# Real QEMU processes on a shared machine: a generous safety net per test, not a measure.
pytestmark = pytest.mark.timeout(900)

BODY = {"name": "wf", "memory": 32, "disk": 1, "os": "none"}


def admin_client(server: OrchestratorProcess) -> httpx.Client:
    key = provision_user(server.data_dir, server.env, "vm-admin", ["admin"])
    return httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def gone(client: httpx.Client, vm_id: str, patience: float = 180.0) -> bool:
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if client.get(f"/api/v1/vms/{vm_id}").status_code == 404:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.usefixtures("images")
def test_a_create_whose_start_fails_is_undone(tmp_path: Path) -> None:
    # `/bin/true` is no QEMU: the disk is made, the start fails, the create is undone.
    server = OrchestratorProcess(
        tmp_path / "data",
        env={
            "PROVISIONING_PROVIDERS__QEMU__BINARY": "/bin/true",
            "PROVISIONING_EXECUTOR__RETRY__MAX_ATTEMPTS": "1",
        },
    ).start()
    try:
        with server.client() as client:
            created = client.post("/api/v1/vms", json=BODY).json()["data"]
            assert gone(client, created["id"])
            workflow = client.get(f"/workflows/{created['workflow_id']}").json()["data"]
            assert workflow["status"] == "RolledBack", workflow
            assert not (tmp_path / "data" / "vms" / created["id"]).exists()
    finally:
        server.stop()


@pytest.mark.usefixtures("images")
def test_a_checkpoints_rollback_deletes_the_vms_created_since(tmp_path: Path) -> None:
    env = {"PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]"}
    server = OrchestratorProcess(tmp_path / "data", env=env).start()
    try:
        with admin_client(server) as admin:
            before = admin.post("/api/v1/vms", json={**BODY, "wait": True}).json()["data"]
            checkpoint = admin.post("/rollback/checkpoints", json={"name": "before"}).json()
            created = admin.post("/api/v1/vms", json={**BODY, "wait": True}).json()["data"]
            assert created["status"] == "running"
            admin.delete(f"/api/v1/vms/{before['id']}", params={"wait": "true"})
            result = admin.post(
                "/rollback/execute", json={"checkpoint_id": checkpoint["data"]}
            ).json()["data"]
            assert gone(admin, created["id"])
            # The delete since the checkpoint cannot be undone: reported, not hidden.
            assert result["operations_failed"] >= 1, result
            rollback = admin.get(f"/tasks?workflow_id={result['rollback_id']}").json()["data"]
            assert any("irreversible" in (task["error"] or "") for task in rollback), rollback
        assert guest.running_pids(tmp_path / "data" / "vms") == {}
    finally:
        server.stop()
        guest.kill_all(tmp_path / "data" / "vms")


def test_without_qemu_the_vm_api_answers_no_hypervisor(tmp_path: Path) -> None:
    server = OrchestratorProcess(
        tmp_path / "data", env={"PROVISIONING_PROVIDERS__QEMU__BINARY": "/nonexistent/qemu"}
    ).start()
    try:
        with server.client() as client:
            refused = client.post("/api/v1/vms", json=BODY)
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "NO_HYPERVISOR"
            assert "/nonexistent/qemu and" not in refused.json()["error"]
            assert "/nonexistent/qemu not installed" in refused.json()["error"]
            assert client.get("/api/v1/vms").json()["data"] == []
    finally:
        server.stop()
