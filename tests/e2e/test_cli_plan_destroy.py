"""`--check`'s plan per resource, `servers delete` and `destroy` from the command line:
a real server on loopback (either store), the CLI as a subprocess with no terminal."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import run
from tests.servers import EXAMPLE_WORKSPACE, OrchestratorProcess, provision_user

SMALL, BIG = "1xCPU-1 GB", "2xCPU-4 GB"


def _infra(root: Path, name: str, servers: list[tuple[str, str]], taskservs: str = "") -> None:
    folder = root / "infra" / name
    folder.mkdir(parents=True)
    lines = [f"  - {{name: {n}, provider: upcloud, plan: {p}, zone: de-fra1}}" for n, p in servers]
    (folder / "settings.yaml").write_text("servers:\n" + "\n".join(lines) + "\n" + taskservs)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    root = tmp_path_factory.mktemp("workspace")
    shutil.copytree(EXAMPLE_WORKSPACE, root, dirs_exist_ok=True)
    _infra(root, "web", [("web-1", SMALL), ("web-2", SMALL)])
    _infra(root, "web-next", [("web-1", SMALL), ("web-2", BIG), ("web-3", SMALL)])
    _infra(root, "shop", [("shop-1", SMALL), ("shop-2", SMALL)], "taskservs:\n  - {name: nginx}\n")
    process = OrchestratorProcess(tmp_path_factory.mktemp("cli-plan"), workspace=root)
    yield process.start()
    process.stop()


def _inventory(server: OrchestratorProcess) -> dict[str, dict[str, object]]:
    done = run("resources", "list", "--limit", "1000", "-o", "json", url=server.url)
    assert done.returncode == 0, done.stderr
    return {f"{r['kind']}/{r['name']}": r for r in json.loads(done.stdout)}


def _create(server: OrchestratorProcess, infra: str) -> None:
    done = run("servers", "create", "--infra", infra, "--wait", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_prints_the_plan_per_resource_and_changes_nothing(server):
    _create(server, "web")
    before = _inventory(server)
    done = run("servers", "create", "--infra", "web-next", "--check", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Plan of check-mode workflow ")
    assert lines[1:] == [
        f"  ~ update server web-2: plan {SMALL} -> {BIG}",
        f"  + create server web-3 (plan={SMALL}, zone=de-fra1)",
        "Plan: 1 to create, 1 to change, 0 to destroy",
    ]
    assert _inventory(server) == before
    as_json = run(
        "servers", "create", "--infra", "web-next", "--check", "-o", "json", url=server.url
    )
    assert as_json.returncode == 0, as_json.stderr
    plan = json.loads(as_json.stdout)
    assert (plan["create"], plan["update"], plan["delete"]) == (1, 1, 0)
    assert {e["name"]: e["action"] for e in plan["entries"]} == {
        "web-2": "update",
        "web-3": "create",
    }
    # Nothing to do is said so.
    same = run("workflow", "servers", "create", "--infra", "web", "--check", url=server.url)
    assert same.returncode == 0 and same.stdout.splitlines()[-1].startswith("No changes")


def test_check_with_wait_follows_the_workflow_then_prints_the_plan(server):
    done = run(
        *("workflow", "taskserv", "create", "nginx", "--infra", "shop", "--check", "--wait"),
        url=server.url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(check mode: nothing was changed)" in done.stdout
    assert "  + create taskserv nginx@shop-1 (server=shop-1)" in done.stdout
    assert done.stdout.rstrip().endswith("Plan: 4 to create, 0 to change, 0 to destroy")


def test_servers_delete_asks_then_removes_one_server(server):
    _create(server, "web")
    refused = run("servers", "delete", "web-1", url=server.url)
    assert refused.returncode == 1
    assert "  - delete server web-1" in refused.stdout
    assert refused.stderr.startswith("error: delete 1 resource (delete server web-1): refused")
    assert "pass --yes" in refused.stderr
    assert "server/web-1" in _inventory(server)
    checked = run("servers", "delete", "web-1", "--check", url=server.url)
    assert checked.returncode == 0 and "Plan: 0 to create, 0 to change, 1 to destroy" in (
        checked.stdout
    )
    done = run("servers", "delete", "web-1", "--yes", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed" in done.stdout
    inventory = _inventory(server)
    assert "server/web-1" not in inventory and "server/web-2" in inventory
    read = run("apply", "upcloud", "server", "read", "-p", "name=web-1", url=server.url)
    assert read.returncode == 1 and "(NOT_FOUND)" in read.stderr  # the cloud has none


def test_destroy_removes_an_infra(server):
    done = run(
        "workflow", "taskserv", "create", "nginx", "--infra", "shop", "--wait", url=server.url
    )
    assert done.returncode == 0, done.stdout + done.stderr
    before = _inventory(server)
    shop = sorted(k for k in before if "shop-" in k)
    assert shop == [
        "server/shop-1",
        "server/shop-2",
        "taskserv/nginx@shop-1",
        "taskserv/nginx@shop-2",
    ]
    checked = run("destroy", "--infra", "shop", "--check", url=server.url)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines()[0] == "Plan to destroy infra shop:"
    assert "  - delete taskserv nginx@shop-1" in checked.stdout
    assert "Plan: 0 to create, 0 to change, 4 to destroy" in checked.stdout
    assert _inventory(server) == before
    refused = run("destroy", "--infra", "shop", url=server.url)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    done = run("destroy", "--infra", "shop", "--yes", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [k for k in _inventory(server) if "shop-" in k]
    again = run("destroy", "--infra", "shop", "--yes", url=server.url)
    assert again.returncode == 0 and "nothing to delete" in again.stderr


def test_a_name_that_does_not_exist_is_a_clear_error(server):
    done = run("servers", "delete", "nowhere-9", "--yes", url=server.url)
    assert done.returncode == 1
    assert done.stderr.startswith("error: server 'nowhere-9' is not in the inventory")
    assert done.stderr.rstrip().endswith("(NOT_FOUND)")


def test_a_viewer_is_refused(server):
    _create(server, "web")
    viewer = provision_user(server.data_dir, server.env, "viewer-cli", ["viewer"])
    done = run("--url", server.url, "--token", viewer, "servers", "delete", "web-2", "--yes")
    assert done.returncode == 1 and "(FORBIDDEN)" in done.stderr
    assert "server/web-2" in _inventory(server)


def test_a_batch_submitted_with_check_prints_its_plan(server):
    before = _inventory(server)
    document = EXAMPLE_WORKSPACE.parent / "batches" / "multi_cloud.yaml"
    done = run("batch", "submit", str(document), "--check", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Plan of check-mode workflow ")
    assert "  + create server web-01 (plan=1xCPU-2 GB, zone=de-fra1)" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("Plan: ")
    assert "to create, 0 to change, 0 to destroy" in done.stdout.splitlines()[-1]
    followed = run("batch", "submit", str(document), "--check", "--wait", url=server.url)
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "Completed" in followed.stdout and "  + create server web-02" in followed.stdout
    assert _inventory(server) == before
