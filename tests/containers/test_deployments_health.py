"""The health monitor: a replica that stops answering its health check after it was ready
is restarted by a workflow of one `replica.restart` task, counted in the deployment's
record, and reported by `status` and `metrics`; on the tests' podman service, through an
orchestrator process (orchestrator/deployment_health.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from websockets.sync.client import connect

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import OrchestratorProcess, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AUTH = {"username": USERNAME, "password": PASSWORD}
#: Checked every second; restarted after two failed checks in a row.
CHECK = {"path": "/", "period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 2}
T = TypeVar("T")


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def http(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as client:
        client.timeout = httpx.Timeout(60)
        yield client


def until(found: Callable[[], T | None], what: str, patience: float = 180) -> T:
    """`found()`'s first truthy answer, asked again until then (a safety timeout)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        answer = found()
        if answer:
            return answer
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not within {patience} s")


def restarts_of(http: httpx.Client, app: str) -> list[dict[str, Any]]:
    """The deployment's restart workflows (the health monitor's), oldest first."""
    listed = http.get("/workflows", params={"kind": "deployment", "limit": 100})
    assert listed.status_code == 200, listed.text
    ours = [w for w in listed.json()["data"] if w["name"] == f"deployment {app} restart"]
    return sorted(ours, key=lambda w: str(w["created_at"]))


@pytest.mark.both_stores
def test_a_replica_failing_its_health_check_is_restarted_by_a_workflow_and_counted(
    http: httpx.Client, engine: Engine, server: OrchestratorProcess
) -> None:
    body = {
        "app_name": "sickly",
        "image": engine.image,
        "port": 8080,
        "replicas": 1,
        "env_vars": {"GREETING": "alive"},
        "health_check": CHECK,
        "registry_auth": AUTH,
    }
    created = http.post("/v1/deployments", json=body)
    assert created.status_code == 201, created.text
    ident = created.json()["data"]["id"]
    assert wait_for_workflow(http, created.json()["data"]["workflow_id"], 180)["status"] == (
        "Completed"
    )
    try:
        status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
        assert status["replicas"] == {"desired": 1, "ready": 1, "available": 1}
        assert status["restart_count"] == 0
        (replica,) = status["instances"]
        name, before = replica["name"], replica["started_at"]

        # The app stops answering: its page is gone (busybox httpd then answers 404).
        engine.podman("exec", name, "/bin/busybox", "rm", "/www/index.html")

        # The monitor sees it fail, then restarts it by a workflow of one task.
        workflow = until(lambda: next(iter(restarts_of(http, "sickly")), None), "a restart")
        done = wait_for_workflow(http, workflow["id"], 180)
        assert done["status"] == "Completed", done
        tasks = http.get("/tasks", params={"workflow_id": workflow["id"]}).json()["data"]
        assert [(t["action"], t["status"]) for t in tasks] == [("replica.restart", "Completed")]
        assert name in str(tasks[0]["params"])

        # Ready again (the container's command wrote the page again), counted once.
        status = until(
            lambda: (
                s
                if (s := http.get(f"/v1/deployments/{ident}/status").json()["data"])["replicas"][
                    "ready"
                ]
                == 1
                else None
            ),
            "ready again",
        )
        assert status["restart_count"] == 1
        assert status["status"] == "running"
        (again,) = status["instances"]
        assert again["name"] == name and again["started_at"] != before
        assert again["restarts"] == 1
        assert httpx.get(
            f"http://127.0.0.1:{again['host_port']}/", trust_env=False
        ).text.strip() == ("alive")
        metrics = http.get(f"/v1/deployments/{ident}/metrics").json()["data"]["metrics"]
        assert [(r["name"], r["restarts"]) for r in metrics["replicas"]] == [(name, 1)]
        assert metrics["total"]["restarts"] == 1
        # Once, and no more while it stays healthy.
        assert len(restarts_of(http, "sickly")) == 1
        # Readiness changes are deployment_status_changed events: down, then up again.
        base = server.url.replace("http", "ws")
        with connect(f"{base}/v1/ws/notifications?since=0&token={server.token}") as socket:
            seen: list[tuple[str, str]] = []
            while ("restart", "running") not in seen:
                message = json.loads(socket.recv(timeout=60))
                if message["deployment_id"] == ident:
                    seen.append((message["data"]["operation"], message["data"]["status"]))
        assert seen[-2:] == [("restart", "updating"), ("restart", "running")], seen
    finally:
        gone = http.delete(f"/v1/deployments/{ident}")
        if gone.status_code == 200:
            wait_for_workflow(http, gone.json()["data"]["workflow_id"], 180)
