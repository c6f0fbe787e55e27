"""A provider type from another distribution plugs in through its entry point alone.

The `files` type (tests/plugins/files: one module and one entry point, installed by
`./dev setup`) declares a kind `file` with `create` (undone by `delete`), `delete`
(irreversible) and `read`. Configured as the instance `scratch`, it gets from the
product, unchanged: validation at submit, planning, tasks, rollback, policies, the
generic API and the CLI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from providers.registry import load_provider_types
from tests.e2e.test_cli import run
from tests.servers import OrchestratorProcess, provision_user

OPERATOR = "test-operator"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scratch")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, root: Path) -> Iterator[OrchestratorProcess]:
    server = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__SCRATCH__TYPE": "files",
            "PROVISIONING_PROVIDERS__SCRATCH__ROOT": str(root),
            "PROVISIONING_PROVIDERS__SCRATCH__MAX_BYTES": "64",
        },
    ).start()
    grant(server, "files:*", OPERATOR)
    yield server
    server.stop()


@pytest.fixture
def http(scratch: OrchestratorProcess) -> Iterator[httpx.Client]:
    with scratch.client() as client:
        yield client


def grant(server: OrchestratorProcess, resource: str, username: str) -> None:
    """A policy letting `username` do anything on `resource` (as an administrator would
    write it with `provisioning policies create`)."""
    from control_center.policy_set import create_policy
    from control_center.store.records import NewPolicy
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine

    env = {k: v for k, v in server.env.items() if k.startswith("PROVISIONING_")}

    async def work() -> None:
        engine = create_engine(load_settings(environ=env))
        try:
            rule = {
                "effect": "Allow",
                "resource": resource,
                "action": ["*"],
                "condition": f"user.username == '{username}'",
            }
            await create_policy(
                engine,
                NewPolicy(
                    name=f"{username} on {resource}",
                    description="the files provider's tests",
                    rules=[rule],
                ),
            )
        finally:
            await engine.dispose()

    asyncio.run(work())


def apply(http: httpx.Client, operation: str, **body: object) -> httpx.Response:
    return http.post(f"/providers/scratch/file/{operation}", json=body)


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message: str = response.json()["error"]
    return message


def test_the_type_is_found_through_its_entry_point() -> None:
    assert load_provider_types()["files"].__module__ == "provisioning_files"


def test_its_kinds_and_operations_are_published(http: httpx.Client) -> None:
    (scratch,) = [p for p in http.get("/providers").json()["data"] if p["name"] == "scratch"]
    assert scratch["type"] == "files" and scratch["declared"]
    (file,) = scratch["kinds"]
    assert (file["name"], file["plural"], file["key"]) == ("file", "files", "name")
    operations = {op["name"]: op for op in file["operations"]}
    assert operations["create"]["undo"] == "delete" and operations["create"]["mutates"]
    assert operations["delete"]["undo"] is None
    assert not operations["read"]["mutates"]
    assert "content" in operations["create"]["params"]["$defs"]["FileCreate"]["properties"]
    document = http.get("/schema/openapi.json").json()
    body = document["paths"]["/providers/{instance}/file/create"]["post"]["requestBody"]
    params = body["content"]["application/json"]["schema"]["properties"]["params"]
    assert params == {"$ref": "#/components/schemas/files.FileCreate"}
    assert "files.FileCreate" in document["components"]["schemas"]


def test_bad_params_are_refused_at_submit_naming_the_field(http: httpx.Client, root: Path) -> None:
    message = error_of(apply(http, "create", params={"name": "../escape"}), 422)
    assert message.startswith("params.name: Expected `str` matching regex")
    # The instance's own rule (its `max_bytes`), through POST /workflows.
    task = {
        "name": "big",
        "provider": "scratch",
        "action": "file.create",
        "params": {"name": "big.txt", "content": "x" * 65},
    }
    message = error_of(http.post("/workflows", json={"name": "w", "tasks": [task]}), 422)
    assert message == "tasks[0].params.content: at most 64 bytes"
    message = error_of(apply(http, "create", params={"name": "a.txt", "mode": 1}), 422)
    assert message == "params.mode: unknown field"
    assert not list(root.iterdir())


def test_planning_knows_what_it_does_and_does_not(http: httpx.Client) -> None:
    batch = {
        "name": "b",
        "operations": [
            {
                "id": "servers",
                "type": "server_batch",
                "provider": "scratch",
                "server_configs": [{"name": "web-01"}],
            }
        ],
    }
    message = error_of(http.post("/batch/execute", json=batch), 422)
    assert "'scratch' (files) has no operation server.create" in message
    assert "file.create, file.delete" in message
    read = {"name": "r", "provider": "scratch", "action": "file.read", "params": {"name": "x"}}
    message = error_of(http.post("/workflows", json={"name": "w", "tasks": [read]}), 422)
    assert "only reads: ask POST /providers/scratch/file/read" in message


def test_an_operation_is_a_task_and_the_file_an_inventory_row(
    http: httpx.Client, root: Path
) -> None:
    response = apply(http, "create", params={"name": "notes.txt", "content": "hello"}, wait=True)
    assert response.status_code == 202, response.text
    assert response.headers["X-Workflow-Status"] == "Completed"
    workflow_id = response.json()["data"]
    (task,) = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert (task["action"], task["command"], task["args"]) == (
        "file.create",
        "scratch file.create",
        ["notes.txt"],
    )
    assert task["output"] == "created file notes.txt"
    assert (root / "notes.txt").read_text() == "hello"
    rows = http.get("/resources", params={"kind": "file", "provider": "scratch"})
    assert rows.headers["X-Total-Count"] == "1"
    (row,) = rows.json()["data"]
    assert (row["name"], row["resource"], row["data"]) == (
        "notes.txt",
        "files:notes.txt",
        {"bytes": 5},
    )
    assert http.get(f"/api/v1/resources/{row['id']}").json()["data"]["task_id"] == task["id"]
    read = apply(http, "read", params={"name": "notes.txt"})
    assert read.status_code == 200
    assert read.json()["data"] == {"name": "notes.txt", "content": "hello"}
    assert error_of(apply(http, "read", params={"name": "missing.txt"}), 404)


def test_check_mode_changes_nothing(http: httpx.Client, root: Path) -> None:
    response = apply(http, "create", params={"name": "dry.txt"}, check_mode=True, wait=True)
    workflow_id = response.json()["data"]
    (task,) = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert task["output"] == "would create file dry.txt"
    assert not (root / "dry.txt").exists()
    # The plan comes from the declarations: a create, and a delete, which has no undo.
    (entry,) = http.get(f"/workflows/{workflow_id}/plan").json()["data"]["entries"]
    assert (entry["action"], entry["name"], entry["reversible"]) == ("create", "dry.txt", True)
    apply(http, "create", params={"name": "kept.txt"}, wait=True)
    response = apply(http, "delete", params={"name": "kept.txt"}, check_mode=True, wait=True)
    plan = http.get(f"/workflows/{response.json()['data']}/plan").json()["data"]
    (entry,) = plan["entries"]
    assert (entry["action"], entry["resource"], entry["reversible"]) == (
        "delete",
        "files:kept.txt",
        False,
    )
    assert (plan["delete"], plan["irreversible"]) == (1, 1)
    assert (root / "kept.txt").exists()


def test_a_rolled_back_checkpoint_deletes_the_file_and_reports_the_irreversible(
    http: httpx.Client, root: Path
) -> None:
    (root / "old.txt").write_text("before")
    apply(http, "create", params={"name": "old-record.txt"}, wait=True)
    checkpoint = http.post("/rollback/checkpoints", json={"name": "before files"}).json()["data"]
    apply(http, "create", params={"name": "new.txt", "content": "after"}, wait=True)
    apply(http, "delete", params={"name": "old.txt"}, wait=True)
    assert (root / "new.txt").exists() and not (root / "old.txt").exists()
    outcome = http.post("/rollback/execute", json={"checkpoint_id": checkpoint}).json()["data"]
    assert (outcome["operations_executed"], outcome["operations_failed"]) == (1, 1)
    assert not (root / "new.txt").exists()
    assert (root / "old-record.txt").exists()
    undone = http.get("/tasks", params={"workflow_id": outcome["rollback_id"]}).json()["data"]
    errors = {t["name"]: t["error"] for t in undone}
    assert errors["undo delete file old.txt"] == "irreversible: file.delete has no undo"
    names = [r["name"] for r in http.get("/resources", params={"kind": "file"}).json()["data"]]
    assert "new.txt" not in names


def test_an_operator_without_a_grant_is_refused(scratch: OrchestratorProcess, root: Path) -> None:
    key = provision_user(scratch.data_dir, scratch.env, "plain-operator", ["operator"])
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=scratch.url, headers=headers, timeout=30) as plain:
        message = error_of(apply(plain, "create", params={"name": "denied.txt"}), 403)
        assert "files:denied.txt" in message
        task = {"name": "t", "provider": "scratch", "action": "file.create"}
        task["params"] = {"name": "denied.txt"}
        error_of(plain.post("/workflows", json={"name": "w", "tasks": [task]}), 403)
        # Reading needs no grant beyond what operators have.
        assert apply(plain, "read", params={"name": "denied.txt"}).status_code == 404
    assert not (root / "denied.txt").exists()


def test_the_cli_applies_lists_and_reads(scratch: OrchestratorProcess, root: Path) -> None:
    done = run(
        *("apply", "scratch", "file", "create", "-p", "name=cli.txt", "-p", "content=from cli"),
        "--wait",
        url=scratch.url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed create file cli.txt" in done.stdout
    assert (root / "cli.txt").read_text() == "from cli"
    done = run("resources", "list", "--kind", "file", "--wide", url=scratch.url)
    (row,) = [line.split() for line in done.stdout.splitlines() if "cli.txt" in line]
    assert row[1:5] == ["scratch", "file", "cli.txt", "active"]
    done = run("resources", "show", row[0], url=scratch.url)
    assert "files:cli.txt" in done.stdout and '{"bytes":8}' in done.stdout
    # `key:=json` for a value that is not a string (here a JSON string, quoted).
    json_value = ("-p", "name=j.txt", "-p", 'content:="{}"', "--wait")
    done = run("apply", "scratch", "file", "create", *json_value, url=scratch.url)
    assert done.returncode == 0, done.stderr
    assert (root / "j.txt").read_text() == "{}"
    done = run("apply", "scratch", "file", "read", "-p", "name=cli.txt", "--json", url=scratch.url)
    assert done.returncode == 0, done.stderr
    assert '"content": "from cli"' in done.stdout
    done = run("providers", url=scratch.url)
    assert "scratch" in done.stdout and "create, delete, read (reads)" in done.stdout
    done = run("apply", "scratch", "file", "create", "-p", "name=/etc", url=scratch.url)
    assert done.returncode == 1
    assert done.stderr.startswith("error: params.name: Expected `str` matching regex")
