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

from tests import backend
from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import OrchestratorProcess, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AUTH = {"username": USERNAME, "password": PASSWORD}
#: Checked every second; restarted after two failed checks in a row.
CHECK = {"path": "/", "period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 2}
T = TypeVar("T")
ENV = {
    "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
    "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
}


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={**ENV, "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket)},
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


def deploy(http: httpx.Client, engine: Engine, app: str) -> str:
    body = {
        "app_name": app,
        "image": engine.image,
        "port": 8080,
        "replicas": 1,
        "env_vars": {"GREETING": "alive"},
        "health_check": CHECK,
        "registry_auth": AUTH,
    }
    created = http.post("/v1/deployments", json=body)
    assert created.status_code == 201, created.text
    data = created.json()["data"]
    assert wait_for_workflow(http, data["workflow_id"], 180)["status"] == "Completed"
    ident: str = data["id"]
    return ident


def remove(http: httpx.Client, ident: str) -> None:
    gone = http.delete(f"/v1/deployments/{ident}")
    if gone.status_code == 200:
        wait_for_workflow(http, gone.json()["data"]["workflow_id"], 180)


def break_app(engine: Engine, replica: str) -> None:
    """The app stops answering: its page is gone (busybox httpd then answers 404)."""
    engine.podman("exec", replica, "/bin/busybox", "rm", "/www/index.html")


def ready_again(http: httpx.Client, ident: str, restarts: int) -> dict[str, Any]:
    """The status once the deployment is ready with `restarts` restarts counted."""

    def found() -> dict[str, Any] | None:
        status: dict[str, Any] = http.get(f"/v1/deployments/{ident}/status").json()["data"]
        counted = status["replicas"]["ready"] == 1 and status["restart_count"] == restarts
        return status if counted else None

    return until(found, f"ready after {restarts} restarts")


@pytest.mark.both_stores
def test_a_replica_failing_its_health_check_is_restarted_by_a_workflow_and_counted(
    http: httpx.Client, engine: Engine, server: OrchestratorProcess
) -> None:
    ident = deploy(http, engine, "sickly")
    try:
        status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
        assert status["replicas"] == {"desired": 1, "ready": 1, "available": 1}
        assert status["restart_count"] == 0
        (replica,) = status["instances"]
        name, before = replica["name"], replica["started_at"]

        break_app(engine, name)

        # The monitor sees it fail, then restarts it by a workflow of one task.
        workflow = until(lambda: next(iter(restarts_of(http, "sickly")), None), "a restart")
        done = wait_for_workflow(http, workflow["id"], 180)
        assert done["status"] == "Completed", done
        tasks = http.get("/tasks", params={"workflow_id": workflow["id"]}).json()["data"]
        assert [(t["action"], t["status"]) for t in tasks] == [("replica.restart", "Completed")]
        assert tasks[0]["params"] == {"name": name, "deployment": ident}

        # Ready again (the container's command wrote the page again), counted once.
        status = ready_again(http, ident, 1)
        assert status["status"] == "running"
        (again,) = status["instances"]
        assert again["name"] == name and again["started_at"] != before
        assert again["restarts"] == 1 and again["ready"] and again["health_failures"] == 0
        page = httpx.get(f"http://127.0.0.1:{again['host_port']}/", trust_env=False)
        assert page.text.strip() == "alive"
        metrics = http.get(f"/v1/deployments/{ident}/metrics").json()["data"]["metrics"]
        assert [(r["name"], r["restarts"]) for r in metrics["replicas"]] == [(name, 1)]
        assert metrics["total"]["restarts"] == 1
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

        # The count is the deployment's record's: the orchestrator's restart keeps it.
        server.stop()
        server.start()
        status = http.get(f"/v1/deployments/{ident}/status").json()["data"]
        assert status["restart_count"] == 1
        assert status["replicas"] == {"desired": 1, "ready": 1, "available": 1}
    finally:
        remove(http, ident)


@pytest.mark.both_stores
def test_two_orchestrators_on_one_database_restart_a_failing_replica_once(
    http: httpx.Client,
    engine: Engine,
    server: OrchestratorProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if not backend.ON_POSTGRES:
        pytest.skip("several orchestrator processes share a PostgreSQL database only")
    # A second process on the same database, watching the same deployments.
    other_dir = tmp_path_factory.mktemp("other")
    key = "test-operator.key"
    (other_dir / key).write_text((server.data_dir / key).read_text())
    other = OrchestratorProcess(
        other_dir,
        env={
            **ENV,
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_DATABASE_URL": server.database,
        },
    ).start()
    ident = deploy(http, engine, "twice")
    try:
        # Twice: each failure is one restart, whichever process decides it.
        for count in (1, 2):
            (replica,) = http.get(f"/v1/deployments/{ident}/status").json()["data"]["instances"]
            break_app(engine, replica["name"])
            until(lambda n=count: len(restarts_of(http, "twice")) >= n, f"restart {count}")
            ready_again(http, ident, count)
            restarts = restarts_of(http, "twice")
            assert len(restarts) == count, restarts
            assert all(w["status"] == "Completed" for w in restarts), restarts
    finally:
        remove(http, ident)
        other.stop()
    assert "Traceback" not in other.log()
    # Both watched it; one decision was logged per restart, whichever process made it.
    decided = [
        line
        for log in (server.log(), other.log())
        for line in log.splitlines()
        if ident in line and "restarting a replica" in line
    ]
    assert len(decided) == 2, decided
