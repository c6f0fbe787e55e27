"""VMs outlive their orchestrator: kill -9 it while a VM runs and while a create is under
way; the restarted one reports the truth and leaves no QEMU it does not list."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from providers.qemu._process import start_ticks
from tests.servers import OrchestratorProcess
from tests.vms import guest

# Real QEMU processes on a shared machine: a generous safety net per test, not a measure.
pytestmark = pytest.mark.timeout(900)

PATIENCE = 180.0  # a safety net, not a measure


def wait_status(client: httpx.Client, vm_id: str, *wanted: str) -> str:
    deadline = time.monotonic() + PATIENCE
    status = ""
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/vms/{vm_id}")
        status = "gone" if response.status_code == 404 else response.json()["data"]["status"]
        if status in wanted:
            return status
        time.sleep(0.1)
    raise TimeoutError(f"vm {vm_id} is {status}, not {wanted}")


def listed(client: httpx.Client) -> dict[str, str]:
    return {vm["id"]: vm["status"] for vm in client.get("/api/v1/vms").json()["data"]}


@pytest.mark.usefixtures("images")
def test_vms_survive_a_killed_orchestrator_and_are_found_again(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = OrchestratorProcess(data).start()
    body = {"name": "survivor", "memory": 32, "disk": 1, "os": "none"}
    try:
        with server.client() as client:
            running = client.post("/api/v1/vms", json={**body, "wait": True}).json()["data"]
            assert running["status"] == "running", running
            pid = guest.running_pids(data / "vms")[running["id"]]
            half = client.post("/api/v1/vms", json={**body, "name": "half"}).json()["data"]
            assert half["status"] == "creating"
        server.kill()  # kill -9: no shutdown code runs
        assert start_ticks(pid) is not None, "the VM died with its orchestrator"
        server.start()
        with server.client() as client:
            assert wait_status(client, running["id"], "running") == "running"
            assert guest.running_pids(data / "vms")[running["id"]] == pid  # the same QEMU
            # The create under way finished, or was undone: never left half made.
            assert wait_status(client, half["id"], "running", "gone") in ("running", "gone")
            api = listed(client)
            assert set(guest.running_pids(data / "vms")) <= {
                vm_id for vm_id, status in api.items() if status == "running"
            }
            for vm_id in api:
                client.delete(f"/api/v1/vms/{vm_id}", params={"wait": "true"})
            assert listed(client) == {}
        assert guest.running_pids(data / "vms") == {}
    finally:
        server.stop()
        guest.kill_all(data / "vms")
