"""Batches, state, checkpoints and rollback through real HTTP against a real server."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import select

from orchestrator.store.models import Event
from tests import backend
from tests.servers import EXAMPLE_WORKSPACE, REPO, OrchestratorProcess

#: On PostgreSQL, copies naming that store as their `storage_backend`.
BATCHES = backend.example_batches(REPO)
YAML = {"content-type": "application/yaml"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE_WORKSPACE, root, dirs_exist_ok=True)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, workspace) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(tmp_path_factory.mktemp("batch"), workspace=workspace).start()
    yield process
    process.stop()


def submit(client: httpx.Client, name: str) -> dict:
    response = client.post("/batch/execute", content=(BATCHES / name).read_bytes(), headers=YAML)
    assert response.status_code == 202, response.text
    return response.json()["data"]


def wait_batch(client: httpx.Client, batch_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/batch/operations/{batch_id}").json()["data"]
        if batch["status"] not in ("Pending", "Running", "RollingBack"):
            return batch
        time.sleep(0.05)
    raise TimeoutError(batch_id)


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    return response.json()["error"]


def test_the_seed_batch_as_given_runs_on_the_configured_store_with_a_warning(client):
    body = yaml.safe_load((BATCHES / "multi_cloud.yaml").read_text())
    body["storage_backend"] = "surrealdb"  # as the reference API gives it
    response = client.post("/batch/execute", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()["data"]
    [warning] = accepted["warnings"]
    assert "surrealdb" in warning and ("'sqlite'" in warning or "'postgresql'" in warning)
    assert wait_batch(client, accepted["batch_id"])["status"] == "Completed"
    # the store's own name (any case) warns of nothing; bad names are clear 4xx
    body["storage_backend"] = "SQLite" if "'sqlite'" in warning else "PostgreSQL"
    assert client.post("/batch/execute", json=body).json()["data"]["warnings"] == []
    for wrong in ("", "x" * 65, "a b", 5):
        body["storage_backend"] = wrong
        error_of(client.post("/batch/execute", json=body), 422, "INVALID_INPUT")


def test_the_multi_cloud_example_runs_to_completed(client):
    accepted = submit(client, "multi_cloud.yaml")
    assert [op["id"] for op in accepted["operations"]] == ["upcloud_servers", "aws_taskservs"]
    # The batch runs from the moment it is accepted: the answer shows how far it got.
    assert all(0.0 <= op["progress"] <= 100.0 for op in accepted["operations"])
    batch = wait_batch(client, accepted["batch_id"])
    assert batch["status"] == "Completed"
    for op in batch["operations"]:
        assert op["status"] == "Completed"
        assert op["progress"] == 100.0
    servers = batch["operations"][0]["results"]
    assert set(servers) == {"server web-01", "server web-02"}
    # Operation dependencies hold: every taskserv started after both servers completed.
    tasks = {
        t["name"]: t
        for t in client.get("/tasks", params={"workflow_id": batch["batch_id"]}).json()["data"]
    }
    last_server = max(t["completed_at"] for n, t in tasks.items() if n.startswith("upcloud"))
    for name, task in tasks.items():
        if name.startswith("aws_taskservs/"):
            assert task["started_at"] >= last_server


def test_the_same_batch_in_json_works(client):
    body = yaml.safe_load((BATCHES / "multi_cloud.yaml").read_text())
    response = client.post("/batch/execute", json=body)
    assert response.status_code == 202
    assert wait_batch(client, response.json()["data"]["batch_id"])["status"] == "Completed"


def test_a_failing_batch_rolls_itself_back_dependents_first(client):
    batch = wait_batch(client, submit(client, "upgrade_that_fails.yaml")["batch_id"])
    assert batch["status"] == "RolledBack"
    statuses = {op["id"]: op["status"] for op in batch["operations"]}
    assert statuses == {
        "new_servers": "RolledBack",
        "runtime": "RolledBack",
        "kubernetes_upgrade": "Failed",
    }
    failed = batch["operations"][2]["results"]["taskserv kubernetes on app-03"]
    assert failed["status"] == "Failed"
    assert "simulated failure" in failed["error"]
    tasks = client.get("/tasks", params={"workflow_id": batch["batch_id"], "limit": 100}).json()[
        "data"
    ]
    undo = {t["name"]: t for t in tasks if t["compensates"]}
    assert set(undo) == {
        "undo new_servers/server app-03",
        "undo new_servers/server app-04",
        "undo runtime/taskserv containerd on app-03",
        "undo runtime/taskserv containerd on app-04",
    }
    for server in ("app-03", "app-04"):
        assert (
            undo[f"undo runtime/taskserv containerd on {server}"]["completed_at"]
            <= undo[f"undo new_servers/server {server}"]["started_at"]
        )


def test_the_command_example_runs_in_the_workspace_and_leaves_nothing(client, workspace):
    before = sorted(workspace.rglob("*"))
    batch = wait_batch(client, submit(client, "commands.yaml")["batch_id"])
    assert batch["status"] == "Completed"
    listing = batch["operations"][2]["results"]["list"]["output"]
    assert "artifact.txt" in listing and "\n20" in listing  # its date, then removed
    assert not Path("/tmp/local_build" + str(workspace.resolve()).replace("/", "-")).exists()
    assert sorted(workspace.rglob("*")) == before


def test_an_irreversible_action_is_reported_not_skipped(client, workspace):
    body = {
        "name": "irreversible",
        "rollback_enabled": True,
        "operations": [
            {
                "id": "format",
                "type": "command_batch",
                "commands": [{"name": "mkfs", "command": "true"}],
            },
            {
                "id": "boom",
                "type": "command_batch",
                "dependencies": ["format"],
                "commands": [{"name": "fail", "command": "false"}],
                "max_attempts": 1,
            },
        ],
    }
    batch_id = client.post("/batch/execute", json=body).json()["data"]["batch_id"]
    batch = wait_batch(client, batch_id)
    assert batch["status"] == "Failed"
    assert "irreversible" in batch["error"]
    compensation = batch["operations"][0]["results"]["mkfs"]["compensation"]
    assert compensation["status"] == "Failed"
    assert "irreversible" in compensation["error"]


def test_soft_dependencies_and_continue_let_work_go_on(client):
    body = {
        "name": "soft",
        "operations": [
            {
                "id": "flaky",
                "type": "server_batch",
                "provider": "aws",
                "on_failure": "continue",
                "max_attempts": 1,
                "simulate": {"fail": True},
                "server_configs": [{"name": "s-1", "plan": "t3.micro", "zone": "eu-west-1"}],
            },
            {
                "id": "after_soft",
                "type": "taskserv_batch",
                "provider": "aws",
                "dependencies": [{"id": "flaky", "type": "soft"}],
                "taskservs": ["monitoring"],
            },
            {
                "id": "after_hard",
                "type": "taskserv_batch",
                "provider": "aws",
                "dependencies": ["flaky"],
                "taskservs": ["logging"],
            },
        ],
    }
    batch_id = client.post("/batch/execute", json=body).json()["data"]["batch_id"]
    batch = wait_batch(client, batch_id)
    statuses = {op["id"]: op["status"] for op in batch["operations"]}
    assert statuses == {"flaky": "Failed", "after_soft": "Completed", "after_hard": "Cancelled"}
    assert batch["status"] == "Failed"


def test_cancelling_a_batch_stops_pending_and_running_work(client):
    body = {
        "name": "slow",
        "parallel_limit": 1,
        "operations": [
            {
                "id": "slow",
                "type": "server_batch",
                "provider": "upcloud",
                "simulate": {"latency": 30},
                "server_configs": [
                    {"name": f"slow-{i}", "plan": "1xCPU-1 GB", "zone": "de-fra1"} for i in range(3)
                ],
            },
        ],
    }
    batch_id = client.post("/batch/execute", json=body).json()["data"]["batch_id"]
    deadline = time.monotonic() + 10
    while client.get(f"/batch/operations/{batch_id}").json()["data"]["status"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = client.post(f"/batch/operations/{batch_id}/cancel")
    assert response.json() == {"success": True, "data": "Operation cancelled"}
    batch = wait_batch(client, batch_id, timeout=10)
    assert batch["status"] == "Cancelled"
    results = batch["operations"][0]["results"]
    assert {r["status"] for r in results.values()} == {"Cancelled"}


def test_batch_listing_and_errors(client):
    listed = client.get("/batch/operations", params={"limit": 2})
    assert listed.status_code == 200
    assert int(listed.headers["X-Total-Count"]) >= 2
    assert all("batch_id" in b for b in listed.json()["data"])
    assert error_of(client.get("/batch/operations/nope"), 404, "NOT_FOUND")
    assert error_of(client.post("/batch/operations/nope/cancel"), 404, "NOT_FOUND")
    bad = client.post("/batch/execute", content=b"name: [", headers=YAML)
    assert "YAML" in error_of(bad, 400, "INVALID_INPUT")
    assert error_of(
        client.post("/batch/execute", content=b"{", headers={"content-type": "application/json"}),
        400,
        "INVALID_INPUT",
    )
    assert error_of(
        client.post("/batch/execute", content=b"x", headers={"content-type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    unknown = {
        "name": "u",
        "operations": [
            {
                "id": "a",
                "type": "server_batch",
                "provider": "upcloud",
                "server_configs": [{"name": "x"}],
            },
            {
                "id": "b",
                "type": "server_batch",
                "provider": "upcloud",
                "dependencies": ["zz"],
                "server_configs": [{"name": "y"}],
            },
        ],
    }
    message = error_of(client.post("/batch/execute", json=unknown), 422, "INVALID_INPUT")
    assert message.startswith("operations[1].dependencies[0]: unknown operation 'zz'")
    cycle = {
        "name": "c",
        "operations": [
            {
                "id": "a",
                "type": "server_batch",
                "provider": "upcloud",
                "dependencies": ["b"],
                "server_configs": [{"name": "x"}],
            },
            {
                "id": "b",
                "type": "server_batch",
                "provider": "upcloud",
                "dependencies": ["a"],
                "server_configs": [{"name": "y"}],
            },
        ],
    }
    assert "a -> b -> a" in error_of(
        client.post("/batch/execute", json=cycle), 422, "CYCLE_DETECTED"
    )
    typed = {"name": "t", "operations": [{"id": "a", "type": "vm_batch"}]}
    assert "operations[0].type" in error_of(
        client.post("/batch/execute", json=typed), 422, "INVALID_INPUT"
    )


def test_checkpoints_rollback_and_restore(client):
    created = client.post(
        "/rollback/checkpoints", json={"name": "before_major_update", "description": "before v2"}
    )
    assert created.status_code == 201
    checkpoint_id = created.json()["data"]
    shown = client.get(f"/rollback/checkpoints/{checkpoint_id}").json()["data"]
    assert shown["name"] == "before_major_update"
    assert shown["operations_count"] == 0
    batch = wait_batch(client, submit(client, "multi_cloud.yaml")["batch_id"])
    assert batch["status"] == "Completed"
    assert (
        client.get(f"/rollback/checkpoints/{checkpoint_id}").json()["data"]["operations_count"] == 5
    )
    listed = client.get("/rollback/checkpoints").json()["data"]
    assert checkpoint_id in [c["id"] for c in listed]

    result = client.post("/rollback/execute", json={"checkpoint_id": checkpoint_id}).json()["data"]
    assert result["success"] is True
    assert result["operations_executed"] == 5
    assert result["operations_failed"] == 0
    assert result["duration"] >= 0
    rollback = client.get(f"/tasks/{result['rollback_id']}").json()["data"]
    assert rollback["kind"] == "workflow"
    assert rollback["status"] == "Completed"
    again = client.post("/rollback/execute", json={"checkpoint_id": checkpoint_id}).json()["data"]
    assert again["operations_executed"] == 0  # nothing is undone twice
    # still a run of its own, with an id that reads back
    assert isinstance(again["rollback_id"], str) and again["rollback_id"] != result["rollback_id"]
    empty = client.get(f"/workflows/{again['rollback_id']}").json()["data"]
    assert (empty["kind"], empty["status"]) == ("rollback", "Completed")

    partial_batch = wait_batch(client, submit(client, "multi_cloud.yaml")["batch_id"])
    partial = client.post(
        "/rollback/execute", json={"operation_ids": [f"{partial_batch['batch_id']}:aws_taskservs"]}
    ).json()["data"]
    assert partial["operations_executed"] == 3
    after = client.get(f"/batch/operations/{partial_batch['batch_id']}").json()["data"]
    assert {op["id"]: op["status"] for op in after["operations"]} == {
        "upcloud_servers": "Completed",
        "aws_taskservs": "RolledBack",
    }

    restored = client.post(f"/rollback/restore/{checkpoint_id}")
    assert restored.json()["data"] == f"State restored from checkpoint {checkpoint_id}"
    stats = client.get("/rollback/statistics").json()["data"]
    assert stats["total_checkpoints"] >= 1
    assert stats["total_rollbacks"] >= 2


def test_deleting_a_checkpoint(client, server):
    checkpoint_id = client.post("/rollback/checkpoints", json={"name": "throwaway"}).json()["data"]
    deleted = client.delete(f"/rollback/checkpoints/{checkpoint_id}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["data"] == f"Checkpoint {checkpoint_id} deleted"
    assert error_of(client.get(f"/rollback/checkpoints/{checkpoint_id}"), 404, "NOT_FOUND")
    listed = client.get("/rollback/checkpoints").json()["data"]
    assert checkpoint_id not in [c["id"] for c in listed]
    for gone in (
        client.delete(f"/rollback/checkpoints/{checkpoint_id}"),
        client.post("/rollback/execute", json={"checkpoint_id": checkpoint_id}),
        client.post(f"/rollback/restore/{checkpoint_id}"),
    ):
        assert checkpoint_id in error_of(gone, 404, "NOT_FOUND")
    events = backend.fetch(
        server.database, select(Event.data).where(Event.type == "CheckpointDeleted")
    )
    assert events[-1]["data"]["checkpoint_id"] == checkpoint_id
    assert events[-1]["data"]["name"] == "throwaway"

    versioned = client.post("/api/v1/rollback/checkpoints", json={"name": "v1"}).json()["data"]
    assert client.delete(f"/api/v1/rollback/checkpoints/{versioned}").status_code == 200
    assert error_of(client.delete(f"/api/v1/rollback/checkpoints/{versioned}"), 404, "NOT_FOUND")


def test_rollback_errors(client):
    assert error_of(client.get("/rollback/checkpoints/nope"), 404, "NOT_FOUND")
    assert error_of(
        client.post("/rollback/execute", json={"checkpoint_id": "nope"}), 404, "NOT_FOUND"
    )
    assert error_of(client.post("/rollback/execute", json={}), 422, "INVALID_INPUT")
    assert error_of(
        client.post("/rollback/execute", json={"operation_ids": ["nope"]}), 404, "NOT_FOUND"
    )
    assert error_of(client.post("/rollback/restore/nope"), 404, "NOT_FOUND")
    assert error_of(client.post("/rollback/checkpoints", json={"name": ""}), 422, "INVALID_INPUT")
    assert error_of(
        client.post(
            "/rollback/checkpoints", content=b"{", headers={"content-type": "application/json"}
        ),
        400,
        "INVALID_INPUT",
    )


def test_restore_is_refused_while_work_runs(client):
    checkpoint_id = client.post("/rollback/checkpoints", json={"name": "cp"}).json()["data"]
    body = {
        "name": "slow",
        "operations": [
            {
                "id": "slow",
                "type": "server_batch",
                "provider": "upcloud",
                "simulate": {"latency": 30},
                "server_configs": [{"name": "slow-9", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
            }
        ],
    }
    batch_id = client.post("/batch/execute", json=body).json()["data"]["batch_id"]
    try:
        message = error_of(client.post(f"/rollback/restore/{checkpoint_id}"), 409, "CONFLICT")
        assert "running" in message
    finally:
        client.post(f"/batch/operations/{batch_id}/cancel")
        wait_batch(client, batch_id)


def test_state_endpoints_read_real_state(client):
    batch = wait_batch(client, submit(client, "multi_cloud.yaml")["batch_id"])
    progress = client.get(f"/state/workflows/{batch['batch_id']}/progress").json()["data"]
    assert progress["progress"] == 100.0
    assert progress["total_steps"] == progress["completed_steps"] == 5
    snapshots = client.get(f"/state/workflows/{batch['batch_id']}/snapshots").json()["data"]
    assert [s["state"] for s in snapshots] == ["pending", "running", "completed"]
    assert snapshots[-1]["details"]["tasks"] == {"Completed": 5}
    metrics = client.get("/state/system/metrics").json()["data"]
    assert metrics["total_workflows"] >= metrics["completed_workflows"] >= 1
    load = metrics["system_load"]
    assert 0 <= load["cpu_usage"] <= 100
    assert load["memory_usage"] > 0
    assert 0 < load["disk_usage"] <= 100
    health = client.get("/state/system/health").json()["data"]
    assert health["overall_status"] == "Healthy"
    assert set(health["components"]) == {"storage", "batch_coordinator", "monitoring"}
    assert health["providers"] == {"aws": "sim", "local": "local", "qemu": "qemu", "upcloud": "sim"}
    stats = client.get("/state/statistics").json()["data"]
    assert stats["total_workflows"] >= 1
    assert stats["storage_bytes"] > 0
    assert stats["average_workflow_duration"] > 0
    assert error_of(client.get("/state/workflows/nope/progress"), 404, "NOT_FOUND")
    assert error_of(client.get("/state/workflows/nope/snapshots"), 404, "NOT_FOUND")


def test_progress_estimates_time_from_observed_durations(client):
    body = {
        "name": "eta",
        "parallel_limit": 1,
        "operations": [
            {
                "id": "s",
                "type": "server_batch",
                "provider": "upcloud",
                "simulate": {"latency": 0.3},
                "server_configs": [
                    {"name": f"eta-{i}", "plan": "1xCPU-1 GB", "zone": "de-fra1"} for i in range(4)
                ],
            }
        ],
    }
    batch_id = client.post("/batch/execute", json=body).json()["data"]["batch_id"]
    deadline = time.monotonic() + 10
    while True:
        progress = client.get(f"/state/workflows/{batch_id}/progress").json()["data"]
        if progress["completed_steps"] >= 1:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert progress["current_step"].startswith("s/server eta-")
    if progress["completed_steps"] < 4:
        # About 0.3 s per remaining task, one at a time.
        assert 0 < progress["estimated_time_remaining"] < 3
    wait_batch(client, batch_id)
