"""kill -9 during an automatic rollback, then a restart: the rollback resumes to the end."""

from __future__ import annotations

import time

from tests.servers import OrchestratorProcess

STEPS = 6


def _guarded(root, name: str, script: str) -> list[str]:
    """`sh -c` holding a per-name lock: a concurrent second run logs CONCURRENT."""
    body = (
        f"flock -n -E 75 {root}/{name}.lock sh -c '{script}'; rc=$?; "
        f'[ $rc -eq 75 ] && echo "CONCURRENT {name}" >> {root}/log; exit $rc'
    )
    return ["-c", body]


def _batch(root) -> dict:
    commands = []
    for i in range(STEPS):
        name = f"f{i}"
        commands.append(
            {
                "name": name,
                "command": "sh",
                "args": _guarded(root, name, f"touch {root}/{name}"),
                "undo": {
                    "command": "sh",
                    "args": _guarded(
                        root,
                        f"undo-{name}",
                        f"echo start-undo {name} >> {root}/log; sleep 0.4; rm -f {root}/{name}; "
                        f"echo end-undo {name} >> {root}/log",
                    ),
                },
            }
        )
    return {
        "name": "rollback-crash",
        "parallel_limit": 2,
        "rollback_enabled": True,
        "operations": [
            {"id": "files", "type": "command_batch", "commands": commands},
            {
                "id": "boom",
                "type": "command_batch",
                "dependencies": ["files"],
                "max_attempts": 1,
                "commands": [{"name": "fail", "command": "false"}],
            },
        ],
    }


def test_a_rollback_interrupted_by_kill_resumes_after_restart(tmp_path, command_dir):
    work = command_dir
    data = tmp_path / "data"
    first = OrchestratorProcess(data, workspace=work).start()
    try:
        with first.client() as http:
            batch_id = http.post("/batch/execute", json=_batch(work)).json()["data"]["batch_id"]
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                batch = http.get(f"/batch/operations/{batch_id}").json()["data"]
                log = (work / "log").read_text() if (work / "log").exists() else ""
                if batch["status"] == "RollingBack" and log.count("end-undo") >= 1:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"never saw the rollback under way: {batch['status']}")
        first.kill()
    finally:
        first.stop()
    remaining = [f"f{i}" for i in range(STEPS) if (work / f"f{i}").exists()]
    assert remaining, "the kill came too late to interrupt the rollback"

    second = OrchestratorProcess(data, workspace=work).start()
    try:
        with second.client() as http:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                batch = http.get(f"/batch/operations/{batch_id}").json()["data"]
                if batch["status"] not in ("Running", "RollingBack"):
                    break
                time.sleep(0.05)
    finally:
        second.stop()
    assert batch["status"] == "RolledBack", batch
    assert [f"f{i}" for i in range(STEPS) if (work / f"f{i}").exists()] == []
    log = (work / "log").read_text()
    assert "CONCURRENT" not in log, log
    assert {op["id"]: op["status"] for op in batch["operations"]} == {
        "files": "RolledBack",
        "boom": "Failed",
    }
