"""Check mode's plan per resource (`GET /workflows/{id}/plan`) and deleting what
workflows created (`POST /resources/destroy`), against a real server on either store."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import EXAMPLE_WORKSPACE, OrchestratorProcess, provision_user

SMALL, BIG = "1xCPU-1 GB", "2xCPU-4 GB"


def _infra(root: Path, name: str, servers: list[tuple[str, str]], taskservs: str = "") -> None:
    folder = root / "infra" / name
    folder.mkdir(parents=True)
    lines = [f"  - {{name: {n}, provider: upcloud, plan: {p}, zone: de-fra1}}" for n, p in servers]
    (folder / "settings.yaml").write_text("servers:\n" + "\n".join(lines) + "\n" + taskservs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE_WORKSPACE, root, dirs_exist_ok=True)
    _infra(root, "alpha", [("alpha-1", SMALL), ("alpha-2", SMALL)])
    # alpha-1 as it is, alpha-2 on a bigger plan, alpha-3 new.
    _infra(root, "alpha-next", [("alpha-1", SMALL), ("alpha-2", BIG), ("alpha-3", SMALL)])
    taskservs = (
        "taskservs:\n  - {name: containerd}\n  - {name: kubelet, dependencies: [containerd]}\n"
    )
    _infra(root, "beta", [("beta-1", SMALL), ("beta-2", SMALL)], taskservs)
    _infra(root, "gamma", [("gamma-1", SMALL), ("gamma-2", SMALL)])
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, workspace) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(tmp_path_factory.mktemp("plan"), workspace=workspace)
    yield process.start()
    process.stop()


@pytest.fixture
def client(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def _created(client: httpx.Client, infra: str, path: str = "servers/create", **extra: Any) -> str:
    body = {"infra": infra, "wait": True, **extra}
    response = client.post(f"/workflows/{path}", json=body)
    assert response.status_code == 202, response.text
    workflow_id: str = response.json()["data"]
    assert client.get(f"/workflows/{workflow_id}").json()["data"]["status"] == "Completed"
    return workflow_id


def _inventory(client: httpx.Client) -> dict[str, dict[str, Any]]:
    rows = client.get("/resources", params={"limit": 1000}).json()["data"]
    return {f"{r['provider']}/{r['kind']}/{r['name']}": r for r in rows}


def _in_the_cloud(client: httpx.Client, name: str) -> bool:
    """What the simulated cloud itself answers for a server (its read operation)."""
    response = client.post("/providers/upcloud/server/read", json={"params": {"name": name}})
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return str(body["error"])


def test_a_check_mode_plan_names_each_change_against_the_inventory(client):
    _created(client, "alpha")
    before = _inventory(client)
    checked = _created(client, "alpha-next", check_mode=True)
    plan = client.get(f"/workflows/{checked}/plan").json()["data"]
    entries = {e["name"]: e for e in plan["entries"]}
    assert set(entries) == {"alpha-2", "alpha-3"}  # alpha-1 is as declared
    resized, new = entries["alpha-2"], entries["alpha-3"]
    assert (resized["action"], resized["changes"]) == (
        "update",
        {"plan": {"old": SMALL, "new": BIG}},
    )
    assert resized["resource_id"] == before["upcloud/server/alpha-2"]["id"]
    assert (new["action"], new["fields"]) == ("create", {"plan": SMALL, "zone": "de-fra1"})
    assert new["resource"] == "servers:alpha-3" and new["reversible"] is True
    assert (plan["create"], plan["update"], plan["delete"], plan["unchanged"]) == (1, 1, 0, 1)
    assert plan["errors"] == [] and plan["workflow_id"] == checked
    # Nothing changed: the inventory and the cloud are as before.
    assert _inventory(client) == before
    assert not _in_the_cloud(client, "alpha-3")
    # Applied for real, the plan is what happens: alpha-2 is resized in place.
    _created(client, "alpha-next")
    after = _inventory(client)
    assert after["upcloud/server/alpha-2"]["data"]["plan"] == BIG
    assert after["upcloud/server/alpha-2"]["id"] == resized["resource_id"]
    assert "upcloud/server/alpha-3" in after


def test_a_failed_check_is_an_error_of_the_plan(client, workspace):
    _infra(workspace, "alpha-moved", [("alpha-1", SMALL)])
    moved = workspace / "infra" / "alpha-moved" / "settings.yaml"
    moved.write_text(moved.read_text().replace("de-fra1", "fi-hel1"))  # zones do not move
    checked = client.post(
        "/workflows/servers/create", json={"infra": "alpha-moved", "check_mode": True, "wait": True}
    ).json()["data"]
    plan = client.get(f"/workflows/{checked}/plan").json()["data"]
    (error,) = plan["errors"]
    assert error["task"] == "server alpha-1" and "already exists" in error["error"]


def test_only_a_check_mode_workflow_has_a_plan(client):
    done = _created(client, "gamma")
    assert "did not run in check mode" in _error(
        client.get(f"/workflows/{done}/plan"), 409, "CONFLICT"
    )
    _error(client.get("/workflows/no-such-workflow/plan"), 404, "NOT_FOUND")


def test_destroy_deletes_an_infra_newest_work_first(client):
    _created(client, "beta")
    _created(client, "beta", path="taskserv/create", taskserv="kubelet")
    before = _inventory(client)
    mine = sorted(k for k in before if "beta-" in k)
    assert len(mine) == 6  # two servers, two taskservs on each
    planned = client.post("/resources/destroy", json={"infra": "beta", "check_mode": True})
    assert planned.status_code == 200, planned.text
    answer = planned.json()["data"]
    assert answer["workflow_id"] is None
    names = sorted(f"{e['provider']}/{e['kind']}/{e['name']}" for e in answer["plan"]["entries"])
    assert names == mine
    assert all(e["action"] == "delete" and not e["skipped"] for e in answer["plan"]["entries"])
    assert answer["plan"]["delete"] == 6
    assert _inventory(client) == before  # the plan changed nothing
    done = client.post("/resources/destroy", json={"infra": "beta", "wait": True})
    assert done.status_code == 202, done.text
    workflow_id = done.json()["data"]["workflow_id"]
    workflow = client.get(f"/workflows/{workflow_id}").json()["data"]
    assert (workflow["kind"], workflow["status"]) == ("destroy", "Completed")
    after = _inventory(client)
    assert not [k for k in after if "beta-" in k]
    assert not _in_the_cloud(client, "beta-1") and not _in_the_cloud(client, "beta-2")
    # Reverse order: each taskserv was undone before its server's undo started, and
    # kubelet (which depends on containerd) before containerd.
    tasks = client.get("/tasks", params={"workflow_id": workflow_id, "limit": 100}).json()["data"]
    by_name = {t["name"]: t for t in tasks}
    assert all(t["status"] == "Completed" for t in tasks)
    for server in ("beta-1", "beta-2"):
        undo_server = by_name[f"undo server {server}"]
        for taskserv in ("containerd", "kubelet"):
            undo = by_name[f"undo taskserv {taskserv} on {server}"]
            assert undo["completed_at"] <= undo_server["started_at"]
        kubelet = by_name[f"undo taskserv kubelet on {server}"]
        containerd = by_name[f"undo taskserv containerd on {server}"]
        assert kubelet["completed_at"] <= containerd["started_at"]


def test_deleting_one_server_leaves_the_others(client):
    _created(client, "gamma")
    body = {"names": ["gamma-1"], "kind": "server", "wait": True}
    done = client.post("/resources/destroy", json=body)
    assert done.status_code == 202, done.text
    plan = done.json()["data"]["plan"]
    assert [(e["action"], e["name"]) for e in plan["entries"]] == [("delete", "gamma-1")]
    inventory = _inventory(client)
    assert "upcloud/server/gamma-1" not in inventory and "upcloud/server/gamma-2" in inventory
    assert not _in_the_cloud(client, "gamma-1") and _in_the_cloud(client, "gamma-2")


def test_a_name_not_in_the_inventory_is_a_clear_error(client):
    body = {"names": ["nowhere-1"], "kind": "server"}
    message = _error(client.post("/resources/destroy", json=body), 404, "NOT_FOUND")
    assert message.startswith("server 'nowhere-1' is not in the inventory")
    assert "give infra" in _error(client.post("/resources/destroy", json={}), 422, "INVALID_INPUT")


def test_a_resource_no_undoable_work_made_is_reported_not_skipped(client):
    """A row put back by a restore, its creation undone meanwhile: nothing to undo."""
    before = client.post("/rollback/checkpoints", json={"name": "no-delta"}).json()["data"]
    params = {"name": "delta-1", "plan": SMALL, "zone": "de-fra1"}
    client.post("/providers/upcloud/server/create", json={"params": params, "wait": True})
    made = client.post("/rollback/checkpoints", json={"name": "delta"}).json()["data"]
    rolled = client.post("/rollback/execute", json={"checkpoint_id": before, "wait": True})
    assert rolled.json()["data"]["success"] is True, rolled.text
    assert client.post(f"/rollback/restore/{made}").status_code == 200
    assert "upcloud/server/delta-1" in _inventory(client)  # recorded, its creation undone
    answer = client.post(
        "/resources/destroy", json={"names": ["delta-1"], "kind": "server", "wait": True}
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    (entry,) = data["plan"]["entries"]
    assert data["workflow_id"] is None and entry["skipped"] is True
    assert "no completed work left to undo" in entry["note"]
    assert (data["plan"]["delete"], data["plan"]["skipped"]) == (0, 1)
    assert "upcloud/server/delta-1" in _inventory(client)


def test_a_viewer_may_not_delete(server, client):
    _created(client, "gamma")
    viewer = provision_user(server.data_dir, server.env, "viewer-d", ["viewer"])
    headers = {"Authorization": f"Bearer {viewer}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        body = {"names": ["gamma-2"], "kind": "server"}
        _error(http.post("/resources/destroy", json=body), 403, "FORBIDDEN")
    assert "upcloud/server/gamma-2" in _inventory(client)
