"""Deployments (seed 002) end to end: an orchestrator process with a `containers`
instance on the tests' podman service, real replicas answering HTTP on loopback.

Each change is a workflow; the tests wait on the API's own status, never on a clock,
and check that no container is left that the API does not list.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import OrchestratorProcess, provision_user, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AUTH = {"username": USERNAME, "password": PASSWORD}
FAST = {
    "path": "/",
    "initial_delay_seconds": 0,
    "period_seconds": 1,
    "timeout_seconds": 1,
    "failure_threshold": 3,
}


@pytest.fixture
def http(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        client.timeout = httpx.Timeout(60)
        yield client


def as_user(server: OrchestratorProcess, username: str, roles: list[str]) -> httpx.Client:
    key = provision_user(server.data_dir, server.env, username, roles)
    return httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


def settle(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Wait for the workflow a change answered with; return the workflow."""
    return wait_for_workflow(http, body["workflow_id"], timeout=180)


def status(http: httpx.Client, ident: str) -> dict[str, Any]:
    response = http.get(f"/v1/deployments/{ident}/status")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def answers(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/", timeout=5, trust_env=False).text.strip()


def listed_containers(http: httpx.Client, ident: str) -> set[str]:
    return {r["name"] for r in status(http, ident)["instances"]}


def create(http: httpx.Client, engine: Engine, app: str, replicas: int, **extra: Any) -> str:
    body = {
        "app_name": app,
        "image": engine.image,
        "port": 8080,
        "replicas": replicas,
        "env_vars": {"GREETING": f"hi from {app}"},
        "health_check": FAST,
        "registry_auth": AUTH,
        **extra,
    }
    response = http.post("/v1/deployments", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert data["status"] == "pending" and data["app_name"] == app
    assert PASSWORD not in response.text
    workflow = settle(http, data)
    assert workflow["status"] == "Completed", workflow
    ident: str = data["id"]
    return ident


@pytest.mark.both_stores
def test_two_replicas_become_ready_answer_http_and_scale_to_four_and_back_to_one(
    http: httpx.Client, engine: Engine, server: OrchestratorProcess
) -> None:
    ident = create(http, engine, "hello", 2)
    now = status(http, ident)
    assert now["status"] == "running" and now["health"] == "healthy"
    assert now["replicas"] == {"desired": 2, "ready": 2, "available": 2}
    ports = [r["host_port"] for r in now["instances"]]
    assert len(set(ports)) == 2
    assert all(answers(port) == "hi from hello" for port in ports)

    detail = http.get(f"/deployments/{ident}").json()["data"]
    assert detail["replicas"] == 2 and detail["env_vars"] == {"GREETING": "hi from hello"}
    assert detail["url"].startswith("http://127.0.0.1:")
    assert "registry_auth" not in detail and PASSWORD not in str(detail)
    # Nowhere in the stored tasks either.
    tasks = http.get("/tasks", params={"workflow_id": detail["workflow_id"]}).text
    assert PASSWORD not in tasks

    scaled = http.patch(f"/api/v1/deployments/{ident}/scale", json={"replicas": 4})
    assert scaled.status_code == 200, scaled.text
    assert settle(http, scaled.json()["data"])["status"] == "Completed"
    assert status(http, ident)["replicas"] == {"desired": 4, "ready": 4, "available": 4}

    down = http.patch(f"/v1/deployments/{ident}/scale", json={"replicas": 1})
    assert settle(http, down.json()["data"])["status"] == "Completed"
    now = status(http, ident)
    assert now["replicas"] == {"desired": 1, "ready": 1, "available": 1}
    assert answers(now["instances"][0]["host_port"]) == "hi from hello"
    mine = {n for n in engine.containers() if n.startswith("hello-")}
    assert mine == listed_containers(http, ident)

    listing = http.get("/v1/deployments", params={"status": "running"}).json()["data"]
    assert ident in [d["id"] for d in listing["deployments"]]
    assert listing["pagination"]["page"] == 1

    gone = http.delete(f"/v1/deployments/{ident}")
    assert gone.status_code == 200, gone.text
    assert settle(http, gone.json()["data"])["status"] == "Completed"
    assert http.get(f"/v1/deployments/{ident}").status_code == 404
    assert not [n for n in engine.containers() if n.startswith("hello-")]


@pytest.mark.both_stores
def test_stop_and_start_and_a_user_sees_only_their_own(
    http: httpx.Client, engine: Engine, server: OrchestratorProcess
) -> None:
    ident = create(http, engine, "pausable", 1)
    stopped = http.post(f"/v1/deployments/{ident}/stop")
    assert stopped.status_code == 200, stopped.text
    settle(http, stopped.json()["data"])
    now = status(http, ident)
    assert now["status"] == "stopped" and now["replicas"]["available"] == 0
    started = http.post(f"/v1/deployments/{ident}/start")
    settle(http, started.json()["data"])
    assert status(http, ident)["replicas"] == {"desired": 1, "ready": 1, "available": 1}

    with as_user(server, "other-operator", ["operator"]) as other:
        assert other.get(f"/v1/deployments/{ident}").status_code == 404
        assert ident not in [
            d["id"] for d in other.get("/v1/deployments").json()["data"]["deployments"]
        ]
        assert other.delete(f"/v1/deployments/{ident}").status_code == 404
    logs = http.get(f"/v1/deployments/{ident}/logs", params={"tail": 10})
    assert logs.status_code == 200, logs.text
    settle(http, http.delete(f"/v1/deployments/{ident}").json()["data"])


def test_a_duplicate_app_name_is_a_conflict(http: httpx.Client, engine: Engine) -> None:
    ident = create(http, engine, "twice", 1)
    again = http.post(
        "/v1/deployments",
        json={"app_name": "twice", "image": engine.image, "port": 8080, "registry_auth": AUTH},
    )
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "CONFLICT"
    settle(http, http.delete(f"/v1/deployments/{ident}").json()["data"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"replicas": -1}, "replicas"),
        ({"replicas": 10_000}, "replicas"),
        ({"port": 0}, "port"),
        ({"port": 70_000}, "port"),
        ({"env_vars": {"A=B": "x"}}, "env_vars"),
        ({"env_vars": {"A\u0000B": "x"}}, ""),
        ({"image": "127.0.0.1:1/none:latest"}, "image"),
        ({"registry_auth": {"username": USERNAME, "password": "wrong"}}, "image"),
        ({"app_name": "Not A Name"}, "app_name"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_leaves_nothing(
    http: httpx.Client, engine: Engine, change: dict[str, Any], field: str
) -> None:
    before = engine.containers()
    body = {
        "app_name": "bad",
        "image": engine.image,
        "port": 8080,
        "replicas": 1,
        "registry_auth": AUTH,
        **change,
    }
    response = http.post("/v1/deployments", json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()
    assert error["success"] is False and error["error"]
    assert field in error["error"], error
    assert PASSWORD not in response.text and "wrong" not in response.text
    assert engine.containers() == before
    assert "bad" not in [
        d["app_name"] for d in http.get("/v1/deployments").json()["data"]["deployments"]
    ]


def test_an_image_that_never_gets_healthy_fails_and_rolls_back(
    http: httpx.Client, engine: Engine
) -> None:
    body = {
        "app_name": "sick",
        "image": engine.broken,
        "port": 8080,
        "replicas": 2,
        "health_check": {**FAST, "failure_threshold": 2},
        "registry_auth": AUTH,
    }
    response = http.post("/v1/deployments", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    workflow = settle(http, data)
    assert workflow["status"] in ("Failed", "RolledBack"), workflow
    record = http.get(f"/v1/deployments/{data['id']}").json()["data"]
    assert record["status"] == "failed" and record["error_message"]
    assert not [n for n in engine.containers() if n.startswith("sick-")]


def test_a_rolling_update_replaces_every_replica_while_the_service_answers(
    http: httpx.Client, engine: Engine
) -> None:
    ident = create(http, engine, "rolling", 2)
    old = listed_containers(http, ident)
    update = http.put(
        f"/v1/deployments/{ident}",
        json={"image": engine.image_v2, "env_vars": {"GREETING": "v2"}, "registry_auth": AUTH},
    )
    assert update.status_code == 200, update.text
    workflow_id = update.json()["data"]["workflow_id"]
    polls, failures, seen = 0, [], set()
    while True:
        workflow = http.get(f"/workflows/{workflow_id}").json()["data"]
        instances = [r for r in status(http, ident)["instances"] if r["running"]]
        answered = []
        for replica in instances:
            try:
                answered.append(answers(replica["host_port"]))
            except httpx.HTTPError:
                continue  # one being removed: another must answer
        polls += 1
        seen.update(answered)
        if not answered:
            failures.append(instances)
        if workflow["status"] in ("Completed", "Failed", "RolledBack", "Cancelled"):
            break
    assert workflow["status"] == "Completed", workflow
    assert not failures, failures
    assert polls > 1 and seen == {"hi from rolling", "v2"}
    now = status(http, ident)
    assert now["replicas"] == {"desired": 2, "ready": 2, "available": 2}
    assert not old & listed_containers(http, ident)
    assert {answers(r["host_port"]) for r in now["instances"]} == {"v2"}
    assert {r["image"] for r in now["instances"]} == {engine.image_v2}
    settle(http, http.delete(f"/v1/deployments/{ident}").json()["data"])


def test_an_update_that_never_gets_healthy_rolls_back_and_the_old_replicas_serve(
    http: httpx.Client, engine: Engine
) -> None:
    ident = create(http, engine, "steady", 2)
    old = listed_containers(http, ident)
    update = http.put(
        f"/v1/deployments/{ident}",
        json={
            "image": engine.broken,
            "registry_auth": AUTH,
            "health_check": {**FAST, "failure_threshold": 2},
        },
    )
    assert update.status_code == 200, update.text
    workflow = settle(http, update.json()["data"])
    assert workflow["status"] in ("Failed", "RolledBack"), workflow
    now = status(http, ident)
    assert listed_containers(http, ident) == old
    assert now["replicas"] == {"desired": 2, "ready": 2, "available": 2}
    assert {answers(r["host_port"]) for r in now["instances"]} == {"hi from steady"}
    record = http.get(f"/v1/deployments/{ident}").json()["data"]
    assert record["image"] == engine.image and record["status"] == "running"
    assert record["error_message"]
    assert sorted(n for n in engine.containers() if n.startswith("steady-")) == sorted(old)
    settle(http, http.delete(f"/v1/deployments/{ident}").json()["data"])


def test_seed_000_docker_endpoints_drive_the_engine_through_tasks(
    http: httpx.Client, engine: Engine
) -> None:
    pulled = http.post("/api/v1/docker/images/pull", json={"imageName": engine.image_v2})
    # The registry wants credentials this endpoint does not take: the engine's refusal.
    assert pulled.status_code == 502 and pulled.json()["code"] == "DOCKER_ERROR", pulled.text
    assert "unauthorized" in pulled.json()["error"].lower() or "authentication" in pulled.text
    body = {
        "name": "seed-web",
        "image": engine.image,
        "env": ["GREETING=from seed 000"],
        "portBindings": {"8080/tcp": [{"hostPort": "0"}]},
    }
    engine.podman("pull", "--creds", f"{USERNAME}:{PASSWORD}", engine.image)
    created = http.post("/api/v1/docker/containers", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["data"]["name"] == "seed-web"
    started = http.post("/api/v1/docker/containers/seed-web/start")
    assert started.status_code == 200, started.text
    listing = http.get("/api/v1/containers").json()["data"]
    assert listing["runtime"] == "podman"
    mine = [c for c in listing["containers"] if c["name"] == "seed-web"]
    assert mine and mine[0]["state"] == "CONTAINER_RUNNING"
    ps = http.get("/api/v1/docker/ps").json()["data"]["containers"]
    assert "/seed-web" in [n for c in ps for n in c["names"]]
    assert http.delete("/api/v1/docker/containers/seed-web").status_code == 409
    assert http.post("/api/v1/docker/containers/seed-web/stop").status_code == 200
    assert http.get("/api/v1/containers/seed-web/logs").status_code == 200
    assert http.delete("/api/v1/docker/containers/seed-web").status_code == 200
    assert "seed-web" not in engine.containers()
    assert http.get("/api/v1/containers/seed-web").status_code == 404
