"""What a `provisioning worker` shows of itself: `/metrics` and `/health` on its own
port, one log line per change of its database's state, and a refusal to start when
another live process already has its identity."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.backend import upgrade
from tests.pg import PostgresServer
from tests.postgres.test_workers import WorkerProcess
from tests.servers import PROVISIONING, REPO, OrchestratorProcess, wait_for_workflow

#: Quick heartbeats and polls, so that an outage is retried many times while it lasts.
QUICK = {
    "PROVISIONING_EXECUTOR__HEARTBEAT": "0.2",
    "PROVISIONING_EXECUTOR__LEASE": "3",
    "PROVISIONING_EXECUTOR__POLL_INTERVAL": "0.2",
    "PROVISIONING_WORKER__METRICS_PORT": "0",  # a free one, shown in the banner
    "PROVISIONING_PROVIDERS__UPCLOUD__LATENCY": "0",
}


def metrics_address(worker: WorkerProcess) -> str:
    found = re.search(r"^\s+metrics\s+(http://\S+)$", worker.log(), re.MULTILINE)
    assert found is not None, worker.log()
    return found.group(1)


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample of a metric from a Prometheus text page."""
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name}{labels} not in:\n{text}"
    return float(found.group(1))


def wait_until(check, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll `check()` until it returns something true (a safety timeout only)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def submit(http: httpx.Client, tasks: int) -> str:
    body = {
        "name": "counted",
        "tasks": [{"name": f"t{i}", "provider": "upcloud", "action": "noop"} for i in range(tasks)],
    }
    response = http.post("/workflows", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["data"])


@pytest.mark.timeout(600)  # a safety net: processes start slowly on a busy machine
def test_a_worker_serves_its_metrics_and_its_health(tmp_path, database_url):
    env = {"PROVISIONING_DATABASE_URL": database_url, **QUICK}
    api = OrchestratorProcess(
        tmp_path / "api", workspace=tmp_path, env={**env, "PROVISIONING_SERVER__WORKER": "false"}
    )
    worker = WorkerProcess(tmp_path / "worker", {**os.environ, **env})
    try:
        api.start()
        worker.start()
        address = metrics_address(worker)
        with api.client() as http:
            workflow_id = submit(http, 5)
            assert wait_for_workflow(http, workflow_id)["status"] == "Completed"
        page = httpx.get(f"{address}metrics", timeout=10)
        health = httpx.get(f"{address}health", timeout=10)
        missing = httpx.get(f"{address}workflows", timeout=10)
    finally:
        worker.stop()
        api.stop()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    assert sample(page.text, "orchestrator_tasks_total", '{status="completed"}') == 5
    assert sample(page.text, "orchestrator_database_round_trips_total") > 0
    assert sample(page.text, "orchestrator_database_errors_total") == 0
    assert health.status_code == 200
    data = health.json()["data"]
    assert data["status"] == "healthy"
    assert data["database"] == "reachable"
    assert data["worker"] in worker.log()  # the id the banner shows
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"


@pytest.mark.timeout(600)
def test_a_database_outage_is_told_once_when_it_starts_and_once_when_it_ends(tmp_path):
    """The worker's own PostgreSQL server is stopped under it, then started again: its
    log has one line for each change, however many times it tried meanwhile, no
    traceback, and it runs tasks again afterwards."""
    server = PostgresServer().start()
    try:
        url = server.new_database()
        env = {"PROVISIONING_DATABASE_URL": url, **QUICK}
        api = OrchestratorProcess(
            tmp_path / "api",
            workspace=tmp_path,
            env={**env, "PROVISIONING_SERVER__WORKER": "false"},
        )
        worker = WorkerProcess(tmp_path / "worker", {**os.environ, **env})
        try:
            api.start()  # (upgrades the database)
            worker.start()
            address = metrics_address(worker)

            def errors() -> float:
                page = httpx.get(f"{address}metrics", timeout=10).text
                return sample(page, "orchestrator_database_errors_total")

            api.stop()  # (the API would retry too; only the worker is watched)
            server.pause()
            wait_until(lambda: "database unreachable" in worker.log(), "the outage's line")
            assert httpx.get(f"{address}health", timeout=10).status_code == 503
            failed = errors()
            # Many more attempts fail (heartbeats, claims, listens every 0.2 s) ...
            wait_until(lambda: errors() >= failed + 20, "more failed attempts")
            server.resume()
            wait_until(lambda: "database reachable again" in worker.log(), "the recovery's line")
            wait_until(
                lambda: httpx.get(f"{address}health", timeout=10).status_code == 200,
                "a healthy worker",
            )
            api.start()
            with api.client() as http:
                workflow_id = submit(http, 3)
                assert wait_for_workflow(http, workflow_id, timeout=60)["status"] == "Completed"
        finally:
            worker.stop()
            api.stop()
        log = worker.log()
    finally:
        server.stop()
    # ... but the log says it once each way.
    assert log.count("database unreachable") == 1, log
    assert log.count("database reachable again") == 1, log
    assert "Traceback" not in log, log


@pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "--mount", "true"], check=False).returncode != 0,
    reason="needs a mount namespace (unshare --mount) to give two workers one data path",
)
@pytest.mark.timeout(600)
def test_a_second_worker_with_the_same_identity_is_refused(tmp_path, database_url):
    """Two containers with one host name and one data path: simulated by a second
    worker in a mount namespace of its own, where another directory is mounted on the
    first worker's data directory (so the data directory's lock cannot see it)."""
    env = {"PROVISIONING_DATABASE_URL": database_url, **QUICK}
    upgrade(database_url)
    first = WorkerProcess(tmp_path / "worker", {**os.environ, **env})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        first.start()
        data_dir = str(first.data_dir)
        second = subprocess.run(
            [
                "unshare",
                "--mount",
                "--",
                "sh",
                "-c",
                'mount --bind "$1" "$2" && exec "$3" worker',
                "sh",
                str(elsewhere),
                data_dir,
                PROVISIONING,
            ],
            env={**os.environ, **env, "PROVISIONING_DATA_DIR": data_dir},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        still_running = first.process is not None and first.process.poll() is None
    finally:
        first.stop()
    assert second.returncode == 1, second.stdout + second.stderr
    identity = re.search(r"^\s+id\s+(\S+)$", first.log(), re.MULTILINE)
    assert identity is not None
    said = second.stdout + second.stderr
    assert f"another process already runs as worker {identity.group(1)}" in said
    assert "its own host name or data_dir" in said
    assert "Traceback" not in said
    assert still_running  # the first one was left alone
    assert Path(elsewhere).exists()
