"""The same product on PostgreSQL (asyncpg): migrations applied with `db upgrade`, the
service refusing an unmigrated database, workflows, batches with automatic rollback,
checkpoints, webhooks' outbox and a kill -9 in the middle of local tasks."""

from __future__ import annotations

import os
import subprocess
import time

from tests.servers import PROVISIONING, OrchestratorProcess, free_port, wait_for_workflow


def _server(tmp_path, database_url: str, work=None, **env: str) -> OrchestratorProcess:
    return OrchestratorProcess(
        tmp_path / "data",
        workspace=work or tmp_path / "work",
        env={"PROVISIONING_DATABASE_URL": database_url, **env},
    )


def test_an_unmigrated_database_is_refused_with_the_command_that_fixes_it(tmp_path, database_url):
    env = {
        **os.environ,
        "PROVISIONING_DATABASE_URL": database_url,
        "PROVISIONING_DATA_DIR": str(tmp_path),
        "PROVISIONING_SERVER__PORT": str(free_port()),
    }
    done = subprocess.run(
        [PROVISIONING, "serve", "orchestrator"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "provisioning db upgrade" in done.stdout + done.stderr
    upgraded = subprocess.run(
        [PROVISIONING, "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert upgraded.returncode == 0, upgraded.stderr


def test_workflows_batches_rollback_and_checkpoints_on_postgresql(tmp_path, database_url):
    (tmp_path / "work").mkdir()
    server = _server(tmp_path, database_url).start()
    try:
        with server.client() as http:
            body = {
                "name": "pg",
                "tasks": [
                    {
                        "name": "a",
                        "provider": "upcloud",
                        "action": "server.create",
                        "params": {"name": "pg-1", "plan": "1xCPU-1 GB", "zone": "de-fra1"},
                    },
                    {"name": "b", "provider": "aws", "action": "noop", "dependencies": ["a"]},
                ],
            }
            workflow_id = http.post("/workflows", json=body).json()["data"]
            assert wait_for_workflow(http, workflow_id)["status"] == "Completed"
            checkpoint = http.post("/rollback/checkpoints", json={"name": "cp"}).json()["data"]
            batch = {
                "name": "fails",
                "rollback_enabled": True,
                "storage_backend": "postgresql",
                "operations": [
                    {
                        "id": "servers",
                        "type": "server_batch",
                        "provider": "upcloud",
                        "server_configs": [
                            {"name": "pg-2", "plan": "1xCPU-1 GB", "zone": "de-fra1"}
                        ],
                    },
                    {
                        "id": "boom",
                        "type": "taskserv_batch",
                        "provider": "upcloud",
                        "dependencies": ["servers"],
                        "taskservs": ["k8s"],
                        "max_attempts": 1,
                        "simulate": {"fail": True},
                    },
                ],
            }
            batch_id = http.post("/batch/execute", json=batch).json()["data"]["batch_id"]
            assert wait_for_workflow(http, batch_id)["status"] == "RolledBack"
            again = {
                "name": "ok",
                "tasks": [
                    {
                        "name": "c",
                        "provider": "upcloud",
                        "action": "server.create",
                        "params": {"name": "pg-3", "plan": "1xCPU-1 GB", "zone": "de-fra1"},
                    }
                ],
            }
            wait_for_workflow(http, http.post("/workflows", json=again).json()["data"])
            result = http.post("/rollback/execute", json={"checkpoint_id": checkpoint}).json()[
                "data"
            ]
            assert result["success"] is True
            assert result["operations_executed"] == 1  # pg-3; the batch undid its own work
            stats = http.get("/state/statistics").json()["data"]
            assert stats["storage_bytes"] > 0
    finally:
        server.stop()


def test_a_killed_server_resumes_its_workflow_on_postgresql(tmp_path, command_dir, database_url):
    work = command_dir  # (the commands write in it)
    tasks = [
        {
            "name": f"t{i}",
            "provider": "local",
            "action": "run",
            "max_attempts": 3,
            "retry_initial_delay": 0.1,
            "params": {"command": "sh", "args": ["-c", f"sleep 0.3; touch {work}/t{i}"]},
        }
        for i in range(8)
    ]
    first = _server(tmp_path, database_url, work).start()
    try:
        with first.client() as http:
            workflow_id = http.post(
                "/workflows", json={"name": "crash", "parallel_limit": 2, "tasks": tasks}
            ).json()["data"]
            deadline = time.monotonic() + 20
            while not list(work.glob("t*")):
                assert time.monotonic() < deadline
                time.sleep(0.02)
        first.kill()
    finally:
        first.stop()
    second = _server(tmp_path, database_url, work).start()
    try:
        with second.client() as http:
            assert wait_for_workflow(http, workflow_id, 60)["status"] == "Completed"
    finally:
        second.stop()
    assert sorted(p.name for p in work.glob("t*")) == sorted(f"t{i}" for i in range(8))
