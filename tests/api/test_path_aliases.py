"""`/api/v1/…` and `/v1/deployments…` are aliases of the root routes
(`orchestrator/http/aliases.py`): the same answers, the called path kept in links, the
audit and the log, and nothing aliased that the root does not serve as a resource."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from control_center.store.models import AuditRecord
from orchestrator.api.controllers import TaskController, health
from orchestrator.http.aliases import Aliases, first_segments, full_path
from tests.backend import fetch
from tests.servers import OrchestratorProcess, wait_for_workflow

#: One route of each aliased family: the answer under /api/v1 must be the root's.
ROUTES = (
    "/tasks?limit=1",
    "/workflows?limit=1",
    "/batch/operations",
    "/state/statistics",
    "/rollback/checkpoints",
    "/webhooks/deliveries",
    "/providers",
    "/resources",
    "/vms",
    "/deployments",
    "/containers",
    "/docker/ps",
    "/kubernetes/pods",
    "/network/interfaces",
    "/system/summary",
    "/logs",
    "/tasks/no-such-task",
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(tmp_path_factory.mktemp("aliases")).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def client(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def _answer(response: httpx.Response) -> tuple[int, object, object]:
    """The status, and a refusal's code and message (a route the router lacks is refused
    in other words than a resource the handler lacks)."""
    body = response.json()
    if not isinstance(body, dict) or response.is_success:
        return response.status_code, None, None
    return response.status_code, body.get("code"), body.get("error")


def test_every_family_answers_the_same_under_api_v1(client: httpx.Client) -> None:
    for route in ROUTES:
        root, aliased = client.get(route), client.get(f"/api/v1{route}")
        assert _answer(aliased) == _answer(root), (route, root.text, aliased.text)
    root, seed_002 = client.get("/deployments"), client.get("/v1/deployments")
    assert _answer(seed_002) == _answer(root), seed_002.text


def test_what_the_root_serves_only_there_is_not_aliased(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    for path in ("/api/v1/health", "/api/v1/metrics", "/v1/tasks", "/api/v1/ui", "/api/v1/"):
        assert client.get(path).status_code == 404, path
    # The account routes are mounted under every prefix: not routed to the root's.
    assert client.post("/api/v1/auth/login", json={}).status_code == 422


def test_links_and_the_audit_keep_the_path_the_client_called(
    server: OrchestratorProcess, client: httpx.Client
) -> None:
    for _ in range(2):
        created = client.post(
            "/api/v1/workflows",
            json={
                "name": "alias",
                "tasks": [{"name": "t", "provider": "upcloud", "action": "noop"}],
            },
        )
        assert created.status_code in (200, 201, 202), created.text
        wait_for_workflow(client, created.json()["data"])
    page = client.get("/api/v1/workflows", params={"limit": 1})
    assert page.status_code == 200, page.text
    assert page.headers["link"].startswith("</api/v1/workflows?"), page.headers["link"]
    table = AuditRecord.__table__
    paths = [r["details"].get("path") for r in fetch(server.database, select(table))]
    assert "/api/v1/workflows" in paths, paths


def test_first_segments_and_routing_under_a_proxy_root_path() -> None:
    assert first_segments([TaskController, health]) == {"tasks", "health"}
    aliases = Aliases({"/api/v1": frozenset({"tasks"}), "/v1": frozenset({"deployments"})})
    for path, root, routed_root in (
        ("/api/v1/tasks/1", "", "/api/v1"),
        ("/v1/deployments", "", "/v1"),
        ("/p/api/v1/tasks", "/p", "/p/api/v1"),  # behind a proxy's root_path
        ("/api/v1/health", "", ""),
        ("/v1/tasks", "", ""),
        ("/tasks", "", ""),
        ("/api/v1tasks", "", ""),
    ):
        scope: dict[str, object] = {"path": path, "root_path": root}
        aliases.route(scope)  # type: ignore[arg-type]
        assert scope["root_path"] == routed_root, path
    assert full_path({"root_path": "/api/v1", "path": "/tasks"}) == "/api/v1/tasks"
