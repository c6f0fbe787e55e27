"""kill -9 the orchestrator during a scale: after a restart the deployment converges to
one spec, reported truthfully, with no container the API does not list. The interrupted
replica tasks are retried and adopt the containers their first attempt made (their
`provisioning.task` label), rather than making second ones."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import OrchestratorProcess, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
AUTH = {"username": USERNAME, "password": PASSWORD}
HEALTH = {"path": "/", "initial_delay_seconds": 3, "period_seconds": 1}


def _server(tmp_path_factory: pytest.TempPathFactory, engine: Engine) -> OrchestratorProcess:
    return OrchestratorProcess(
        tmp_path_factory.mktemp("crash"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    ).start()


def _deploy(http: httpx.Client, engine: Engine, app: str, replicas: int) -> str:
    """A deployment, once its create workflow ended; its id."""
    created = http.post(
        "/v1/deployments",
        json={
            "app_name": app,
            "image": engine.image,
            "port": 8080,
            "replicas": replicas,
            "health_check": HEALTH,
            "registry_auth": AUTH,
        },
    )
    assert created.status_code == 201, created.text
    wait_for_workflow(http, created.json()["data"]["workflow_id"], timeout=300)
    return str(created.json()["data"]["id"])


def _containers(engine: Engine, app: str) -> set[str]:
    return {name for name in engine.containers() if name.startswith(f"{app}-")}


def _kill_once(server: OrchestratorProcess, engine: Engine, app: str, seen: set[str]) -> None:
    """Once the engine holds a container of `app` not in `seen` (the change's first new
    replica, waiting for its health), kill -9 the server and start it again."""
    deadline = time.monotonic() + 300  # a safety net, not a window
    while not _containers(engine, app) - seen:
        assert time.monotonic() < deadline, engine.containers()
        time.sleep(0.05)
    server.kill()
    server.start()


def test_a_scale_interrupted_by_kill_9_converges_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> None:
    server = _server(tmp_path_factory, engine)
    try:
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ident = _deploy(http, engine, "crashy", 1)
            before = _containers(engine, "crashy")
            scaled = http.patch(f"/v1/deployments/{ident}/scale", json={"replicas": 3})
            assert scaled.status_code == 200, scaled.text
            workflow_id = scaled.json()["data"]["workflow_id"]
        _kill_once(server, engine, "crashy", before)
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ended = wait_for_workflow(http, workflow_id, timeout=600)
            status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
            record = http.get(f"/v1/deployments/{ident}").json()["data"]
            names = {r["name"] for r in status["instances"]}
            assert _containers(engine, "crashy") == names, (names, ended)
            expected = 3 if ended["status"] == "Completed" else 1
            assert record["replicas"] == expected, (record, ended)
            assert status["replicas"] == {
                "desired": expected,
                "ready": expected,
                "available": expected,
            }, status
            gone = http.delete(f"/v1/deployments/{ident}")
            wait_for_workflow(http, gone.json()["data"]["workflow_id"], timeout=300)
        assert not _containers(engine, "crashy")
    finally:
        server.stop()


def test_a_rolling_update_interrupted_by_kill_9_converges_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> None:
    """The same for an update of the image: after the restart every replica runs one of
    the two specs, the record says which, and the engine holds only what the API lists."""
    server = _server(tmp_path_factory, engine)
    try:
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ident = _deploy(http, engine, "rolly", 2)
            before = _containers(engine, "rolly")
            updated = http.put(
                f"/v1/deployments/{ident}", json={"image": engine.image_v2, "registry_auth": AUTH}
            )
            assert updated.status_code in (200, 202), updated.text
            workflow_id = updated.json()["data"]["workflow_id"]
        _kill_once(server, engine, "rolly", before)
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ended = wait_for_workflow(http, workflow_id, timeout=600)
            status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
            record = http.get(f"/v1/deployments/{ident}").json()["data"]
            names = {r["name"] for r in status["instances"]}
            assert _containers(engine, "rolly") == names, (names, ended)
            expected = engine.image_v2 if ended["status"] == "Completed" else engine.image
            assert record["image"] == expected, (record, ended)
            assert status["replicas"] == {"desired": 2, "ready": 2, "available": 2}, status
            images = {
                engine.podman("inspect", "--format", "{{.ImageName}}", name).stdout.strip()
                for name in names
            }
            assert images == {expected}, (images, ended)
            gone = http.delete(f"/v1/deployments/{ident}")
            wait_for_workflow(http, gone.json()["data"]["workflow_id"], timeout=300)
        assert not _containers(engine, "rolly")
    finally:
        server.stop()
