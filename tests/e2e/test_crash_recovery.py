"""kill -9 in the middle of a workflow of local shell tasks, then a restart."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from orchestrator.store.models import Event
from tests.backend import database_url, fetch
from tests.servers import OrchestratorProcess, wait_for_workflow

TASKS = 12


def _task(index: int, root: Path, dependencies: list[str]) -> dict:
    """A task that holds a lock while it works: a second concurrent run would find it
    taken and say so in the log; its side effect is a `.done` file."""
    name = f"step-{index:02d}"
    script = (
        f'echo "start {name} $$" >> {root}/log; sleep 0.4; '
        f'echo "{name}" > {root}/{name}.done; echo "end {name} $$" >> {root}/log; '
        f'echo "{name} printed this"'
    )
    guarded = (
        f"flock -n -E 75 {root}/{name}.lock sh -c '{script}'; rc=$?; "
        f'[ $rc -eq 75 ] && echo "CONCURRENT {name}" >> {root}/log; exit $rc'
    )
    return {
        "name": name,
        "provider": "local",
        "action": "run",
        "params": {"command": "sh", "args": ["-c", guarded]},
        "dependencies": dependencies,
        "max_attempts": 3,
        "retry_initial_delay": 0.1,
    }


def _workflow(root: Path) -> dict:
    tasks = [_task(0, root, [])]
    tasks += [_task(i, root, ["step-00"]) for i in range(1, TASKS - 1)]
    tasks.append(_task(TASKS - 1, root, [f"step-{i:02d}" for i in range(1, TASKS - 1)]))
    return {"name": "crash-test", "parallel_limit": 3, "tasks": tasks}


def _kill_and_restart(
    tmp_path: Path, work: Path, env: dict[str, str] | None = None, down: float = 0.0
) -> tuple[dict, list[dict], str]:
    """Run the workflow in `work`, kill -9 the server while tasks run, restart it after
    `down` seconds; return the workflow, its tasks and the log the commands wrote."""
    data = tmp_path / "data"
    first = OrchestratorProcess(data, workspace=work, env=env).start()
    try:
        with first.client() as http:
            response = http.post("/workflows", json=_workflow(work))
            assert response.status_code == 202, response.text
            workflow_id = response.json()["data"]
            # Kill while some tasks are done and others are running.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                tasks = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
                statuses = [t["status"] for t in tasks]
                if statuses.count("Completed") >= 2 and "Running" in statuses:
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"never saw running tasks: {statuses}")
        first.kill()
    finally:
        first.stop()
    time.sleep(down)
    second = OrchestratorProcess(data, workspace=work, env=env).start()
    try:
        with second.client() as http:
            workflow = wait_for_workflow(http, workflow_id, timeout=60)
            tasks = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    finally:
        second.stop()
    return workflow, tasks, (work / "log").read_text()


def test_in_the_fast_mode_a_killed_server_finishes_every_workflow_after_restart(
    tmp_path, command_dir
):
    """`record_exit = false`: what was running when the server died runs again."""
    fast = {"PROVISIONING_PROVIDERS__LOCAL__RECORD_EXIT": "false"}
    workflow, tasks, log = _kill_and_restart(tmp_path, command_dir, fast)
    work = command_dir
    assert workflow["status"] == "Completed", workflow
    assert all(t["status"] == "Completed" for t in tasks)
    assert "CONCURRENT" not in log, log
    for index in range(TASKS):
        assert (work / f"step-{index:02d}.done").exists()
    # The interrupted tasks were retried as new attempts, by their policy: no attempt
    # started that the store does not count (one killed before its command spawned
    # counts without a start), and the kill cost some task an attempt.
    starts: dict[str, int] = {}
    for line in log.splitlines():
        if line.startswith("start "):
            starts[line.split()[1]] = starts.get(line.split()[1], 0) + 1
    for task in tasks:
        assert 1 <= starts[task["name"]] <= task["attempts"], (task["name"], starts)
    assert any(t["attempts"] >= 2 for t in tasks), "no task was interrupted by the kill"
    # Every task ran to its end at least once (at-least-once: a crash between a
    # command's exit and the commit of its completion runs it again, never concurrently).
    ends = {line.split()[1] for line in log.splitlines() if line.startswith("end ")}
    assert ends == {f"step-{i:02d}" for i in range(TASKS)}, log


def test_a_command_that_finished_during_the_crash_is_recorded_not_run_again(tmp_path, command_dir):
    """The server stays down long enough for the commands it was running to finish:
    their exit statuses, written by their wrappers (`record_exit`, the default), and
    their output, spooled to a file, are recorded on restart."""
    workflow, tasks, log = _kill_and_restart(tmp_path, command_dir, down=1.0)
    assert workflow["status"] == "Completed", workflow
    assert "CONCURRENT" not in log, log
    ends = [line.split()[1] for line in log.splitlines() if line.startswith("end ")]
    assert sorted(ends) == [f"step-{i:02d}" for i in range(TASKS)], log  # exactly once
    events = Event.__table__
    rows = fetch(
        database_url(tmp_path / "data"), select(events).where(events.c.type == "TaskRecovered")
    )
    recovered = {row["task_id"] for row in rows}
    assert recovered, "no command finished while the server was down"
    for task in tasks:
        assert task["output"] == f"{task['name']} printed this\n", task
        if task["id"] in recovered:
            assert task["attempts"] == 1


def test_attempts_cut_short_by_crashes_count_against_max_attempts(tmp_path, command_dir):
    """A task killed with its server again and again, each time after its side effect:
    every crash costs an attempt, so it runs `max_attempts` times at most, then fails."""
    work = command_dir
    log = work / "log"
    script = f"echo start >> {log}; sleep 0.3; echo done >> {log}; sleep 30"
    task = {
        "name": "crashy",
        "provider": "local",
        "action": "run",
        "params": {"command": "sh", "args": ["-c", script]},
        "max_attempts": 2,
        "retry_initial_delay": 0.05,
    }
    env = {"PROVISIONING_PROVIDERS__LOCAL__RECORD_EXIT": "false"}
    server = OrchestratorProcess(tmp_path / "data", workspace=work, env=env).start()
    try:
        with server.client() as http:
            workflow_id = http.post("/workflows", json={"name": "w", "tasks": [task]}).json()[
                "data"
            ]
        status = "Running"
        for crash in range(4):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if log.exists() and log.read_text().count("done") > crash:
                    break
                with server.client() as http:
                    status = http.get(f"/workflows/{workflow_id}").json()["data"]["status"]
                if status == "Failed":
                    break
                time.sleep(0.02)
            if status == "Failed":
                break
            server.kill()
            server = OrchestratorProcess(tmp_path / "data", workspace=work, env=env).start()
        with server.client() as http:
            workflow = wait_for_workflow(http, workflow_id, timeout=120)
            (shown,) = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    finally:
        server.stop()
    assert workflow["status"] == "Failed"
    assert shown["attempts"] == 2
    assert "interrupted" in shown["error"]
    assert log.read_text().count("start") == 2, log.read_text()
