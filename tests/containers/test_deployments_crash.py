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


def test_a_scale_interrupted_by_kill_9_converges_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> None:
    server = OrchestratorProcess(
        tmp_path_factory.mktemp("crash"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    ).start()
    try:
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            health = {"path": "/", "initial_delay_seconds": 3, "period_seconds": 1}
            created = http.post(
                "/v1/deployments",
                json={
                    "app_name": "crashy",
                    "image": engine.image,
                    "port": 8080,
                    "replicas": 1,
                    "health_check": health,
                    "registry_auth": {"username": USERNAME, "password": PASSWORD},
                },
            )
            assert created.status_code == 201, created.text
            ident = created.json()["data"]["id"]
            wait_for_workflow(http, created.json()["data"]["workflow_id"], timeout=300)
            scaled = http.patch(f"/v1/deployments/{ident}/scale", json={"replicas": 3})
            assert scaled.status_code == 200, scaled.text
            workflow_id = scaled.json()["data"]["workflow_id"]
        # The new replicas' containers exist and their tasks wait for health: kill now.
        deadline = time.monotonic() + 300  # a safety net, not a window
        while len([n for n in engine.containers() if n.startswith("crashy-")]) < 2:
            assert time.monotonic() < deadline, engine.containers()
            time.sleep(0.05)
        server.kill()
        server.start()
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ended = wait_for_workflow(http, workflow_id, timeout=600)
            status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
            record = http.get(f"/v1/deployments/{ident}").json()["data"]
            names = {r["name"] for r in status["instances"]}
            on_engine = {n for n in engine.containers() if n.startswith("crashy-")}
            assert on_engine == names, (on_engine, names, ended)
            expected = 3 if ended["status"] == "Completed" else 1
            assert record["replicas"] == expected, (record, ended)
            assert status["replicas"] == {
                "desired": expected,
                "ready": expected,
                "available": expected,
            }, status
            gone = http.delete(f"/v1/deployments/{ident}")
            wait_for_workflow(http, gone.json()["data"]["workflow_id"], timeout=300)
        assert not [n for n in engine.containers() if n.startswith("crashy-")]
    finally:
        server.stop()


def test_a_rolling_update_interrupted_by_kill_9_converges_after_a_restart(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> None:
    """The same for an update of the image: after the restart every replica runs one of
    the two specs, the record says which, and the engine holds only what the API lists."""
    server = OrchestratorProcess(
        tmp_path_factory.mktemp("crash-update"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    ).start()
    auth = {"username": USERNAME, "password": PASSWORD}
    try:
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            health = {"path": "/", "initial_delay_seconds": 3, "period_seconds": 1}
            created = http.post(
                "/v1/deployments",
                json={
                    "app_name": "rolly",
                    "image": engine.image,
                    "port": 8080,
                    "replicas": 2,
                    "health_check": health,
                    "registry_auth": auth,
                },
            )
            assert created.status_code == 201, created.text
            ident = created.json()["data"]["id"]
            wait_for_workflow(http, created.json()["data"]["workflow_id"], timeout=300)
            first = {n for n in engine.containers() if n.startswith("rolly-")}
            updated = http.put(
                f"/v1/deployments/{ident}", json={"image": engine.image_v2, "registry_auth": auth}
            )
            assert updated.status_code in (200, 202), updated.text
            workflow_id = updated.json()["data"]["workflow_id"]
        # A new replica exists beside the old ones and waits for its health: kill now.
        deadline = time.monotonic() + 300  # a safety net, not a window
        while not {n for n in engine.containers() if n.startswith("rolly-")} - first:
            assert time.monotonic() < deadline, engine.containers()
            time.sleep(0.05)
        server.kill()
        server.start()
        with server.client() as http:
            http.timeout = httpx.Timeout(60)
            ended = wait_for_workflow(http, workflow_id, timeout=600)
            status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
            record = http.get(f"/v1/deployments/{ident}").json()["data"]
            names = {r["name"] for r in status["instances"]}
            on_engine = {n for n in engine.containers() if n.startswith("rolly-")}
            assert on_engine == names, (on_engine, names, ended)
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
        assert not [n for n in engine.containers() if n.startswith("rolly-")]
    finally:
        server.stop()
