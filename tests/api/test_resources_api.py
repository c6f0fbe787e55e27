"""What providers declare, through the API: `GET /providers`, one operation at a time
(`POST /providers/{instance}/{kind}/{operation}`), the inventory (`GET /resources`), and
params refused at submit on every path, naming the field."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import EXAMPLE_WORKSPACE, OrchestratorProcess, provision_user

VALID_PLANS = "valid: 1xCPU-1 GB, 1xCPU-2 GB, 2xCPU-4 GB"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE_WORKSPACE, root, dirs_exist_ok=True)
    unplanned = root / "infra" / "unplanned"
    unplanned.mkdir()
    (unplanned / "settings.yaml").write_text(
        "servers:\n"
        "  - {name: web-01, provider: upcloud, plan: 1xCPU-1 GB, zone: de-fra1}\n"
        "  - {name: web-02, provider: upcloud, plan: huge, zone: de-fra1}\n"
    )
    commands = root / "infra" / "commands"
    commands.mkdir()
    (commands / "settings.yaml").write_text(
        "servers:\n  - {name: build, provider: local}\n"
        "  - {name: built, provider: local, params: {command: 'true'}}\n"
    )
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, workspace) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(tmp_path_factory.mktemp("resources"), workspace=workspace)
    yield process.start()
    process.stop()


def error_of(response: httpx.Response, status: int, code: str = "INVALID_INPUT") -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert (body["success"], body["code"]) == (False, code), body
    return str(body["error"])


def test_every_instance_is_listed_with_its_kinds_and_operations(client):
    listed = {p["name"]: p for p in client.get("/providers").json()["data"]}
    assert {name: p["type"] for name, p in listed.items()} == {
        "aws": "sim",
        "local": "local",
        "qemu": "qemu",
        "upcloud": "sim",
    }
    (vm,) = listed["qemu"]["kinds"]
    assert (vm["name"], vm["plural"], vm["key"], listed["qemu"]["touches_host"]) == (
        "vm",
        "vms",
        "id",
        True,
    )
    assert {op["name"]: op["undo"] for op in vm["operations"]}["delete"] is None
    upcloud = listed["upcloud"]
    assert not upcloud["touches_host"] and upcloud["declared"]
    kinds = {k["name"]: k for k in upcloud["kinds"]}
    assert set(kinds) == {"server", "taskserv", "cluster", "noop"}
    assert (kinds["server"]["plural"], kinds["noop"]["key"]) == ("servers", None)
    create = {op["name"]: op for op in kinds["server"]["operations"]}["create"]
    assert (create["action"], create["mutates"], create["undo"]) == (
        "server.create",
        True,
        "delete",
    )
    assert create["params"]["$defs"]["ServerCreate"]["required"] == ["name", "plan", "zone"]
    (command,) = listed["local"]["kinds"]
    assert listed["local"]["touches_host"]
    assert command["operations"][0]["action"] == "run"


def test_each_operation_is_published_with_its_params(client):
    document = client.get("/schema/openapi.json").json()
    create = document["paths"]["/providers/{instance}/server/create"]["post"]
    (instance,) = create["parameters"]
    assert instance["schema"]["enum"] == ["aws", "upcloud"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["params"] == {"$ref": "#/components/schemas/sim.ServerCreate"}
    assert "202" in create["responses"] and "200" not in create["responses"]
    read = document["paths"]["/providers/{instance}/server/read"]["post"]
    assert "200" in read["responses"] and "202" not in read["responses"]
    assert "/providers/{instance}/{kind}/{operation}" in document["paths"]
    assert {"/providers", "/resources", "/resources/{resource_id}"} <= set(document["paths"])


def test_a_mutating_operation_is_a_one_task_workflow(client):
    params = {"name": "gen-01", "plan": "1xCPU-1 GB", "zone": "de-fra1"}
    response = client.post(
        "/providers/upcloud/server/create", json={"params": params, "wait": True}
    )
    assert response.status_code == 202, response.text
    workflow_id = response.json()["data"]
    assert response.headers["Location"] == f"/tasks/{workflow_id}"
    assert response.headers["X-Workflow-Status"] == "Completed"
    workflow = client.get(f"/workflows/{workflow_id}").json()["data"]
    assert (workflow["kind"], workflow["name"]) == ("server", "create server gen-01")
    (task,) = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert (task["action"], task["params"], task["args"]) == ("server.create", params, ["gen-01"])


def test_a_read_only_operation_answers_its_result(client):
    params = {"name": "gen-02", "plan": "1xCPU-1 GB", "zone": "fi-hel1"}
    client.post("/providers/upcloud/server/create", json={"params": params, "wait": True})
    read = client.post("/api/v1/providers/upcloud/server/read", json={"params": {"name": "gen-02"}})
    assert read.status_code == 200, read.text
    assert read.json()["data"]["zone"] == "fi-hel1"
    missing = client.post("/providers/upcloud/server/read", json={"params": {"name": "nope"}})
    assert "server nope does not exist" in error_of(missing, 404, "NOT_FOUND")


def test_what_is_not_declared_or_configured_is_404(client):
    message = error_of(client.post("/providers/upcloud/vm/create", json={}), 404, "NOT_FOUND")
    assert "has no operation vm/create (it has: server/create" in message
    message = error_of(client.post("/providers/gcp/server/create", json={}), 404, "NOT_FOUND")
    assert "'gcp' is not configured (configured: aws, local, qemu, upcloud)" in message


def test_params_are_checked_at_submit_on_every_path(client):
    bad = {"name": "x", "plan": "huge", "zone": "de-fra1"}
    message = error_of(client.post("/providers/upcloud/server/create", json={"params": bad}), 422)
    assert message.startswith(f"params.plan: unknown plan 'huge'; {VALID_PLANS}")
    task = {"name": "t", "provider": "upcloud", "action": "server.create", "params": bad}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message.startswith(f"tasks[0].params.plan: unknown plan 'huge'; {VALID_PLANS}")
    task["params"] = {"name": "x", "zone": "de-fra1"}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message == "tasks[0].params.plan: required"
    task["params"] |= {"plan": "t3.micro", "simulate": {"fail": "sometimes"}}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message == "tasks[0].params.simulate.fail: Invalid enum value 'sometimes'"
    servers = {"id": "s", "type": "server_batch", "provider": "aws", "server_configs": [bad]}
    message = error_of(
        client.post("/batch/execute", json={"name": "b", "operations": [servers]}), 422
    )
    assert message.startswith("operations[0].server_configs[0].plan: unknown plan 'huge'")
    message = error_of(client.post("/workflows/servers/create", json={"infra": "unplanned"}), 422)
    assert message.startswith("servers[1].plan: unknown plan 'huge'")


def test_a_server_on_an_instance_running_commands_is_made_by_its_command(client):
    """`local` declares no servers: its `run` stands in, with the command in the params."""
    body = {"infra": "commands", "check_mode": True, "wait": True}
    message = error_of(client.post("/workflows/servers/create", json=body), 422)
    assert message == "servers[0].command: required"
    task = {"name": "t", "provider": "local", "action": "run", "params": {"args": ["x"]}}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message == "tasks[0].params.command: required"


def test_an_undeclared_action_or_a_read_in_a_workflow_is_refused(client):
    task = {"name": "t", "provider": "upcloud", "action": "server.resize", "params": {}}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message.startswith("tasks[0].action: 'server.resize' is not an operation of 'upcloud'")
    task = {"name": "t", "provider": "upcloud", "action": "server.read", "params": {"name": "a"}}
    message = error_of(client.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert "only reads: ask POST /providers/upcloud/server/read" in message


def test_the_inventory_lists_filters_pages_and_shows(client):
    for name in ("inv-01", "inv-02", "inv-03"):
        params = {"name": name, "plan": "t3.small", "zone": "eu-west-1"}
        client.post("/providers/aws/server/create", json={"params": params, "wait": True})
    page = client.get("/resources", params={"provider": "aws", "kind": "server", "limit": 2})
    assert page.status_code == 200
    assert (page.headers["X-Total-Count"], page.headers["X-Limit"]) == ("3", "2")
    assert 'rel="next"' in page.headers["Link"]
    rows = page.json()["data"]
    assert [r["name"] for r in rows] == ["inv-01", "inv-02"]
    assert rows[0]["resource"] == "servers:inv-01" and rows[0]["data"]["plan"] == "t3.small"
    shown = client.get(f"/resources/{rows[0]['id']}").json()["data"]
    assert shown == rows[0]
    assert client.get("/resources", params={"kind": "cluster"}).json()["data"] == []
    error_of(client.get("/resources/no-such-id"), 404, "NOT_FOUND")


def test_check_mode_plans_the_operation_without_changing_anything(client):
    params = {"name": "dry-01", "plan": "t3.small", "zone": "eu-west-1"}
    body = {"params": params, "check_mode": True, "wait": True}
    workflow_id = client.post("/providers/aws/server/create", json=body).json()["data"]
    (task,) = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert task["output"].startswith("would create server dry-01")
    names = [r["name"] for r in client.get("/resources", params={"provider": "aws"}).json()["data"]]
    assert "dry-01" not in names


def test_each_item_is_authorized_and_a_viewer_may_only_read(server):
    viewer = provision_user(server.data_dir, server.env, "viewer-r", ["viewer"])
    headers = {"Authorization": f"Bearer {viewer}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        assert http.get("/providers").status_code == 200
        assert http.get("/resources").status_code == 200
        body = {"params": {"name": "v-01", "plan": "t3.small", "zone": "eu-west-1"}}
        message = error_of(http.post("/providers/aws/server/create", json=body), 403, "FORBIDDEN")
        assert "providers:aws" in message
    with server.client() as operator:
        # An operator may run commands here (tests/servers.py), not without the grant:
        # the item is the instance itself, `run` on `local:local`.
        body = {"params": {"command": "true"}}
        assert operator.post("/providers/local/command/run", json=body).status_code == 202


async def _privacy_policy(env: dict[str, str], pattern: str) -> None:
    """A policy like the default `vm_privacy_policy`, over the servers named `pattern`."""
    from control_center.policy_set import create_policy
    from control_center.store.records import NewPolicy
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine

    settings = load_settings(
        environ={k: v for k, v in env.items() if k.startswith("PROVISIONING_")}
    )
    engine = create_engine(settings)
    rule = {
        "effect": "Deny",
        "resource": pattern,
        "action": ["*"],
        "condition": "resource.owner != '' and resource.owner != user.id "
        "and 'admin' not in user.roles",
    }
    try:
        await create_policy(engine, NewPolicy(name=f"private {pattern}", rules=[rule]))
    finally:
        await engine.dispose()


def test_each_caller_lists_only_the_items_its_policies_let_it_read(server):
    asyncio.run(_privacy_policy(server.env, "servers:mine-*"))
    made: dict[str, str] = {}
    for user in ("owner-a", "owner-b"):
        key = provision_user(server.data_dir, server.env, user, ["operator"])
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            body = {"params": {"name": f"mine-{user}", "plan": "t3.small", "zone": "eu-west-1"}}
            response = http.post("/providers/aws/server/create", json={**body, "wait": True})
            assert response.headers["X-Workflow-Status"] == "Completed", response.text
            made[user] = key
    seen: dict[str, list[dict]] = {}
    for user, key in [*made.items(), ("test-operator", server.token)]:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as http:
            page = http.get("/resources", params={"provider": "aws", "limit": 500})
            assert page.status_code == 200, page.text
            seen[user] = [r for r in page.json()["data"] if r["name"].startswith("mine-")]
            # The total counts what the caller may read, so its pages are whole.
            assert page.headers["X-Total-Count"] == str(len(page.json()["data"]))
    assert [r["name"] for r in seen["owner-a"]] == ["mine-owner-a"]
    assert [r["name"] for r in seen["owner-b"]] == ["mine-owner-b"]
    assert seen["test-operator"] == []  # neither an owner nor an administrator
    (a_row,) = seen["owner-a"]
    (b_row,) = seen["owner-b"]
    assert a_row["owner"] and a_row["owner"] != b_row["owner"]
    # The owner is the user whose workflow made it, as the workflow shows.
    with server.client() as http:
        workflow = http.get(f"/workflows/{a_row['workflow_id']}").json()["data"]
    assert workflow["owner"] == a_row["owner"]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {made['owner-a']}"}, timeout=30
    ) as http:
        assert http.get(f"/resources/{a_row['id']}").status_code == 200
        # Another user's item is not found, as if it did not exist.
        error_of(http.get(f"/resources/{b_row['id']}"), 404, "NOT_FOUND")


def test_a_change_to_the_inventory_is_an_event_of_its_workflow(client):
    params = {"name": "ev-01", "plan": "t3.small", "zone": "eu-west-1"}
    made = client.post("/providers/aws/server/create", json={"params": params, "wait": True})
    gone = client.post(
        "/providers/aws/server/delete", json={"params": {"name": "ev-01"}, "wait": True}
    )
    seen = []
    for response in (made, gone):
        workflow_id = response.json()["data"]
        events = client.get(f"/workflows/{workflow_id}/events").json()["data"]
        seen += [e["data"] for e in events if e["event_type"] == "ResourceChanged"]
    assert [(e["provider"], e["kind"], e["name"], e["op"]) for e in seen] == [
        ("aws", "server", "ev-01", "create"),
        ("aws", "server", "ev-01", "delete"),
    ]
    assert seen[1]["status"] == "deleted" and seen[0]["status"] != "deleted"
