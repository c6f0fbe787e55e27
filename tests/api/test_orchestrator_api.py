"""The orchestrator's HTTP API, through a real client against a real server process."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.local_commands import is_gone
from tests.servers import EXAMPLE_WORKSPACE, OrchestratorProcess, wait_for_workflow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE_WORKSPACE, root, dirs_exist_ok=True)
    broken = root / "infra" / "broken"
    broken.mkdir()
    (broken / "settings.yaml").write_text("servers: [\n")
    (broken / "typed.yaml").write_text("servers:\n  - name: 7\n    provider: upcloud\n")
    (broken / "bad.ncl").write_text('{ servers = 1 + "x" }')
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, workspace) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("api"),
        workspace=workspace,
        env={"PROVISIONING_SERVER__MAX_BODY_BYTES": "65536"},
    ).start()
    yield process
    process.stop()


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code
    return body["error"]


def test_health_answers_without_anything_else(client):
    response = client.get("/health")
    assert response.json() == {"success": True, "data": "Orchestrator is healthy"}


def test_the_seed_server_workflow_runs_and_its_id_is_pollable_as_a_task(client):
    body = {"infra": "production", "settings": "config.ncl", "check_mode": False, "wait": False}
    response = client.post("/workflows/servers/create", json=body)
    assert response.status_code == 202
    workflow_id = response.json()["data"]
    assert wait_for_workflow(client, workflow_id)["status"] == "Completed"
    summary = client.get(f"/tasks/{workflow_id}").json()["data"]
    assert summary["status"] == "Completed"
    assert summary["kind"] == "workflow"
    tasks = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert sorted(t["name"] for t in tasks) == ["server db-01", "server web-01", "server web-02"]
    for task in tasks:
        assert task["status"] == "Completed"
        assert task["started_at"] and task["completed_at"]
        assert task["dependencies"] == []
        assert "created server" in task["output"] or "already exists" in task["output"]


def test_wait_true_answers_once_the_workflow_has_ended(client):
    body = {"infra": "production", "settings": "config.ncl", "wait": True}
    response = client.post("/workflows/servers/create", json=body)
    assert response.status_code == 202
    assert response.headers["X-Workflow-Status"] == "Completed"


def test_taskserv_workflow_installs_after_servers_and_dependencies(client):
    response = client.post(
        "/workflows/taskserv/create",
        json={"operation": "create", "taskserv": "kubernetes", "infra": "production"},
    )
    workflow_id = response.json()["data"]
    assert wait_for_workflow(client, workflow_id)["status"] == "Completed"
    tasks = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    ids = {t["name"]: t["id"] for t in tasks}
    kube = next(t for t in tasks if t["name"] == "taskserv kubernetes on web-01")
    assert sorted(kube["dependencies"]) == sorted(
        [ids["server web-01"], ids["taskserv containerd on web-01"]]
    )
    by_id = {t["id"]: t for t in tasks}
    for task in tasks:
        for dep in task["dependencies"]:
            assert by_id[dep]["completed_at"] <= task["started_at"]


def test_cluster_workflow_in_check_mode_plans_without_changing(client):
    response = client.post(
        "/workflows/cluster/create",
        json={
            "operation": "create",
            "cluster_type": "buildkit",
            "infra": "production",
            "check_mode": True,
        },
    )
    workflow_id = response.json()["data"]
    workflow = wait_for_workflow(client, workflow_id)
    assert workflow["status"] == "Completed" and workflow["check_mode"] is True
    tasks = client.get("/tasks", params={"workflow_id": workflow_id, "limit": 1000}).json()["data"]
    cluster = next(t for t in tasks if t["name"] == "cluster buildkit")
    assert cluster["output"].startswith("would ")
    assert len(cluster["dependencies"]) == 2  # cilium on web-01 and web-02


def test_task_list_filters_and_pages_with_headers(client):
    workflow_id = client.post(
        "/workflows/servers/create", json={"infra": "production", "wait": True}
    ).json()["data"]
    first = client.get("/tasks", params={"workflow_id": workflow_id, "limit": 2})
    assert first.headers["X-Total-Count"] == "3"
    assert first.headers["X-Limit"] == "2" and first.headers["X-Offset"] == "0"
    assert 'rel="next"' in first.headers["Link"]
    next_url = first.headers["Link"].split(">")[0].lstrip("<")
    second = client.get(next_url)
    assert len(second.json()["data"]) == 1 and "Link" not in second.headers
    names = {t["name"] for t in first.json()["data"] + second.json()["data"]}
    assert len(names) == 3
    completed = client.get("/tasks", params={"status": "Completed", "limit": 1000})
    assert all(t["status"] == "Completed" for t in completed.json()["data"])
    assert int(completed.headers["X-Total-Count"]) >= 3


def test_a_task_fetched_by_id_has_the_seed_fields(client):
    task = client.get("/tasks", params={"limit": 1}).json()["data"][0]
    fetched = client.get(f"/tasks/{task['id']}").json()["data"]
    for field in (
        "id",
        "name",
        "command",
        "args",
        "dependencies",
        "status",
        "created_at",
        "started_at",
        "completed_at",
        "output",
        "error",
    ):
        assert field in fetched
    assert fetched["id"] == task["id"]


def test_retries_then_succeeds_and_a_permanent_failure_cancels_dependents(client):
    body = {
        "name": "retry-and-cascade",
        "tasks": [
            {
                "name": "flaky",
                "provider": "upcloud",
                "action": "noop",
                "max_attempts": 3,
                "retry_initial_delay": 0.01,
                "params": {"simulate": {"fail_attempts": 2}},
            },
            {
                "name": "broken",
                "provider": "aws",
                "action": "server.create",
                "params": {
                    "name": "x1",
                    "plan": "t3.micro",
                    "zone": "eu-west-1",
                    "simulate": {"fail": "permanent"},
                },
            },
            {
                "name": "after-broken",
                "provider": "aws",
                "action": "noop",
                "dependencies": ["broken"],
            },
            {
                "name": "further",
                "provider": "aws",
                "action": "noop",
                "dependencies": ["after-broken", "flaky"],
            },
        ],
    }
    workflow_id = client.post("/workflows", json=body).json()["data"]
    workflow = wait_for_workflow(client, workflow_id)
    assert workflow["status"] == "Failed"
    tasks = {
        t["name"]: t
        for t in client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    }
    assert tasks["flaky"]["status"] == "Completed" and tasks["flaky"]["attempts"] == 3
    assert tasks["broken"]["status"] == "Failed" and tasks["broken"]["attempts"] == 1
    assert "permanent" in tasks["broken"]["error"]
    for name in ("after-broken", "further"):
        assert tasks[name]["status"] == "Cancelled"
        assert tasks[name]["error"] == "cancelled: dependency 'broken' failed"


def test_a_task_past_its_timeout_fails_and_its_process_is_gone(client, command_dir):
    pid_file = command_dir / "pid"
    body = {
        "name": "timeout",
        "tasks": [
            {
                "name": "slow",
                "provider": "local",
                "action": "run",
                "timeout": 0.5,
                "max_attempts": 1,
                "params": {"command": "sh", "args": ["-c", f"echo $$ > {pid_file}; exec sleep 30"]},
            }
        ],
    }
    workflow_id = client.post("/workflows", json=body).json()["data"]
    assert wait_for_workflow(client, workflow_id)["status"] == "Failed"
    task = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"][0]
    assert task["error"] == "timed out after 0.5s"
    # Dead (its wrapper's end left it to init to collect: it may still be a zombie).
    assert is_gone(int(pid_file.read_text()))


def test_cancelling_a_workflow_stops_running_and_pending_tasks(client, command_dir):
    pid_file = command_dir / "pid"
    body = {
        "name": "cancel-me",
        "tasks": [
            {
                "name": "long",
                "provider": "local",
                "action": "run",
                "params": {"command": "sh", "args": ["-c", f"echo $$ > {pid_file}; exec sleep 30"]},
            },
            {
                "name": "never",
                "provider": "local",
                "action": "run",
                "dependencies": ["long"],
                "params": {"command": "touch", "args": [str(command_dir / "never")]},
            },
        ],
    }
    workflow_id = client.post("/workflows", json=body).json()["data"]
    deadline = time.monotonic() + 10
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    response = client.post(f"/workflows/{workflow_id}/cancel")
    assert response.json() == {"success": True, "data": "Workflow cancelled"}
    assert wait_for_workflow(client, workflow_id, timeout=10)["status"] == "Cancelled"
    tasks = {
        t["name"]: t
        for t in client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    }
    assert tasks["long"]["status"] == "Cancelled" and tasks["never"]["status"] == "Cancelled"
    assert not (command_dir / "never").exists()
    # Dead (its wrapper's end left it to init to collect: it may still be a zombie).
    assert is_gone(int(pid_file.read_text()))
    again = client.post(f"/workflows/{workflow_id}/cancel").json()["data"]
    assert "already ended" in again


def test_workflows_list_and_show(client):
    listed = client.get("/workflows", params={"limit": 5})
    assert listed.status_code == 200 and int(listed.headers["X-Total-Count"]) >= 1
    first = listed.json()["data"][0]
    shown = client.get(f"/workflows/{first['id']}").json()["data"]
    assert shown["id"] == first["id"] and sum(shown["task_counts"].values()) >= 1


# -- errors ------------------------------------------------------------------------


def test_malformed_json_is_400(client):
    response = client.post(
        "/workflows/servers/create",
        content=b'{"infra": ',
        headers={"content-type": "application/json"},
    )
    assert "could not be decoded" in error_of(response, 400, "INVALID_INPUT")


def test_wrong_types_are_422_naming_the_field(client):
    response = client.post(
        "/workflows/servers/create", json={"infra": "production", "check_mode": "yes"}
    )
    assert "check_mode" in error_of(response, 422, "INVALID_INPUT")
    response = client.post("/workflows/servers/create", json={"infrx": "production"})
    assert "infrx" in error_of(response, 422, "INVALID_INPUT")
    response = client.post("/workflows", json={"name": "x", "tasks": [{"name": 1}]})
    assert "tasks[0].name" in error_of(response, 422, "INVALID_INPUT")


def test_unknown_infra_settings_and_names_are_404(client):
    message = error_of(
        client.post("/workflows/servers/create", json={"infra": "nope"}), 404, "NOT_FOUND"
    )
    assert "infra 'nope' not found" in message and "production" in message
    response = client.post(
        "/workflows/servers/create", json={"infra": "production", "settings": "missing.yaml"}
    )
    assert "missing.yaml" in error_of(response, 404, "NOT_FOUND")
    response = client.post(
        "/workflows/taskserv/create", json={"taskserv": "nope", "infra": "production"}
    )
    assert "taskserv 'nope'" in error_of(response, 404, "NOT_FOUND")
    response = client.post(
        "/workflows/cluster/create", json={"cluster_type": "nope", "infra": "production"}
    )
    assert "cluster type 'nope'" in error_of(response, 404, "NOT_FOUND")
    assert "not found" in error_of(client.get("/tasks/nope"), 404, "NOT_FOUND")
    assert error_of(client.get("/workflows/nope"), 404, "NOT_FOUND")
    assert error_of(client.post("/workflows/nope/cancel"), 404, "NOT_FOUND")
    assert error_of(client.get("/no/such/route"), 404, "NOT_FOUND")


def test_paths_cannot_escape_the_workspace(client):
    for infra, settings in (
        ("..", None),
        ("production", "../../etc/passwd"),
        ("production/..", None),
    ):
        response = client.post(
            "/workflows/servers/create", json={"infra": infra, "settings": settings}
        )
        assert response.status_code == 422, response.text


def test_broken_settings_files_are_422_naming_file_and_field(client):
    for settings, fragment in (
        ("settings.yaml", "not valid YAML"),
        ("typed.yaml", "servers[0].name"),
        ("bad.ncl", "nickel evaluation failed"),
    ):
        response = client.post(
            "/workflows/servers/create", json={"infra": "broken", "settings": settings}
        )
        message = error_of(response, 422, "INVALID_INPUT")
        assert fragment in message, message
        assert "\x1b" not in message


def test_graph_errors_are_refused_before_anything_is_stored(client):
    before = client.get("/tasks").headers["X-Total-Count"]
    cycle = {
        "name": "c",
        "tasks": [
            {"name": "a", "provider": "upcloud", "action": "noop", "dependencies": ["c"]},
            {"name": "b", "provider": "upcloud", "action": "noop", "dependencies": ["a"]},
            {"name": "c", "provider": "upcloud", "action": "noop", "dependencies": ["b"]},
        ],
    }
    response = client.post("/workflows", json=cycle)
    message = error_of(response, 422, "CYCLE_DETECTED")
    assert all(name in message for name in ("a", "b", "c"))
    assert response.json()["details"]["cycle"][0] == response.json()["details"]["cycle"][-1]
    unknown = {
        "name": "u",
        "tasks": [
            {"name": "a", "provider": "upcloud", "action": "noop", "dependencies": ["ghost"]}
        ],
    }
    assert "unknown task 'ghost'" in error_of(
        client.post("/workflows", json=unknown), 422, "INVALID_INPUT"
    )
    duplicate = {
        "name": "d",
        "tasks": [
            {"name": "a", "provider": "upcloud", "action": "noop"},
            {"name": "a", "provider": "upcloud", "action": "noop"},
        ],
    }
    assert "duplicate name" in error_of(
        client.post("/workflows", json=duplicate), 422, "INVALID_INPUT"
    )
    provider = {"name": "p", "tasks": [{"name": "a", "provider": "gcp", "action": "noop"}]}
    assert "'gcp'" in error_of(client.post("/workflows", json=provider), 422, "INVALID_INPUT")
    assert client.get("/tasks").headers["X-Total-Count"] == before


def test_bad_query_parameters_are_refused(client):
    assert "status" in error_of(
        client.get("/tasks", params={"status": "Done"}), 422, "INVALID_INPUT"
    )
    assert error_of(client.get("/tasks", params={"limit": 0}), 422, "INVALID_INPUT")
    assert error_of(client.get("/tasks", params={"limit": 1001}), 422, "INVALID_INPUT")
    assert error_of(client.get("/tasks", params={"offset": -1}), 422, "INVALID_INPUT")
    assert error_of(client.get("/tasks", params={"limit": "x"}), 422, "INVALID_INPUT")


def test_a_body_over_the_limit_is_413(client):
    response = client.post("/workflows/servers/create", json={"infra": "x" * 70_000})
    assert "max_body_bytes" in error_of(response, 413, "PAYLOAD_TOO_LARGE")


def test_bad_operation_is_422(client):
    response = client.post(
        "/workflows/taskserv/create",
        json={"operation": "explode", "taskserv": "kubernetes", "infra": "production"},
    )
    assert "operation" in error_of(response, 422, "INVALID_INPUT")


def test_header_versioning_and_the_api_v1_prefix(client):
    vendor = {"Accept": "application/vnd.provisioning.v1+json"}
    assert client.get("/tasks", headers=vendor).status_code == 200
    refused = client.get("/tasks", headers={"Accept": "application/vnd.provisioning.v2+json"})
    assert "v1" in error_of(refused, 406, "NOT_ACCEPTABLE")
    prefixed = client.get("/api/v1/tasks", params={"limit": 1})
    assert prefixed.status_code == 200
    assert prefixed.headers["X-Total-Count"] == client.get("/tasks").headers["X-Total-Count"]
    assert client.get("/api/v1/workflows/nope").json()["code"] == "NOT_FOUND"


def test_the_openapi_schema_lists_every_endpoint(client):
    schema = client.get("/schema/openapi.json").json()
    paths = set(schema["paths"])
    for path in (
        "/health",
        "/tasks",
        "/tasks/{task_id}",
        "/workflows/servers/create",
        "/workflows/taskserv/create",
        "/workflows/cluster/create",
        "/batch/execute",
        "/batch/operations",
        "/batch/operations/{batch_id}",
        "/batch/operations/{batch_id}/cancel",
        "/state/system/health",
        "/state/workflows/{workflow_id}/progress",
        "/rollback/checkpoints",
        "/rollback/execute",
        "/rollback/restore/{checkpoint_id}",
        "/metrics",
    ):
        assert path in paths, path


def test_secrets_in_task_parameters_are_never_shown(client):
    params = {
        "auth": {"bearer": "eyJ-leaked"},
        "command": "curl",
        "args": ["-H", "Authorization: Bearer eyJ-leaked", "--password", "hunter2"],
        "url": "postgresql://app:hunter2@db/prod",
    }
    task = {"name": "secretive", "provider": "upcloud", "action": "noop", "params": params}
    workflow_id = client.post("/workflows", json={"name": "s", "tasks": [task]}).json()["data"]
    wait_for_workflow(client, workflow_id)
    (shown,) = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    text = str(shown) + client.get(f"/tasks/{shown['id']}").text
    assert "eyJ-leaked" not in text
    assert "hunter2" not in text
    assert shown["params"]["url"] == "postgresql://app:********@db/prod"
    assert shown["args"] == ["-H", "Authorization: Bearer ********", "--password", "********"]


def test_the_api_docs_work_offline_and_try_it_out_sends_a_token(server):
    # No credential: the documents and their page are open, as /health is.
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        for path in ("/schema", "/schema/swagger"):
            page = anonymous.get(path)
            assert page.status_code == 200, path
            scripts = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
            assert scripts and all(s.startswith("/schema/assets/") for s in scripts), scripts
            for asset in scripts:
                served = anonymous.get(asset)
                assert served.status_code == 200 and len(served.content) > 500, asset
        document = anonymous.get("/schema/openapi.json").json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert {"bearer": []} in document["security"]
