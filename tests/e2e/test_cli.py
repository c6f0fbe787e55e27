"""The `provisioning` command end to end: a real server process, the CLI as a subprocess.

Output here is not a terminal, so `--wait` prints one plain line per task state change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests import backend
from tests.servers import (
    PROVISIONING,
    TOKENS,
    OrchestratorProcess,
    free_port,
    interruptible,
    wait_for_workflow,
)

UUID_LENGTH = 36


def run(
    *args: str, url: str | None = None, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the CLI; `url` becomes `--url`. The environment holds no PROVISIONING_* but `env`.
    `timeout` is a safety net against a hang, not a measure: a command that starts the
    service imports every provider type, which takes tens of seconds on a busy machine."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONING_")}
    command = [PROVISIONING, *(["--url", url] if url else []), *args]
    if url in TOKENS:
        command[1:1] = ["--token", TOKENS[url]]
    return subprocess.run(
        command,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def submit(server: OrchestratorProcess, tasks: list[dict[str, object]], name: str = "x") -> str:
    """Submit an explicit-graph workflow over HTTP; return its id."""
    with server.client() as http:
        response = http.post("/workflows", json={"name": name, "tasks": tasks})
    assert response.status_code == 202, response.text
    workflow_id: str = response.json()["data"]
    return workflow_id


def slow_task(name: str) -> dict[str, object]:
    return {
        "name": name,
        "provider": "upcloud",
        "action": "noop",
        "params": {"simulate": {"latency": 30}},
    }


@pytest.fixture(scope="module")
def servers_workflow(server: OrchestratorProcess) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`workflow servers create --infra production --wait`, run once for the module."""
    done = run("workflow", "servers", "create", "--infra", "production", "--wait", url=server.url)
    first_line = done.stdout.splitlines()[0] if done.stdout else ""
    return first_line.split()[1] if first_line.startswith("workflow ") else "", done


@pytest.fixture
def server_env(server: OrchestratorProcess, tmp_path: Path) -> dict[str, str]:
    """The module server's configuration, pointed at a data directory (and on
    PostgreSQL a database, not upgraded yet) of its own."""
    env = {k: v for k, v in server.env.items() if k.startswith("PROVISIONING_")}
    data = tmp_path / "data"
    return {**env, "PROVISIONING_DATA_DIR": str(data), **backend.database_env(data, upgraded=False)}


# -- serve ----------------------------------------------------------------------------------


def test_serve_says_where_it_listens_and_that_the_clouds_are_simulated(server):
    log = server.log()
    assert f"listening  http://127.0.0.1:{server.port}" in log
    assert f"data dir   {server.data_dir}" in log
    assert f"database   {server.database}" in log
    assert "upcloud (sim, simulated cloud)" in log
    assert "aws (sim, simulated cloud)" in log


def test_serve_on_a_port_in_use_exits_1_with_a_clear_message(server, server_env):
    done = run("serve", env={**server_env, "PROVISIONING_SERVER__PORT": str(server.port)})
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot listen on 127.0.0.1:{server.port}: the address is already in use; "
        "choose another port with server.port (PROVISIONING_SERVER__PORT, or serve --port)"
    )


@pytest.mark.skipif(
    backend.ON_POSTGRES,
    reason="the data-directory lock guards the embedded SQLite database only",
)
def test_a_second_orchestrator_on_the_same_data_dir_exits_1_without_a_traceback(server):
    env = {k: v for k, v in server.env.items() if k.startswith("PROVISIONING_")}
    done = run("serve", "--port", str(free_port()), env=env)
    assert done.returncode == 1
    assert "error: the orchestrator did not start: another orchestrator is already running" in (
        done.stderr
    )
    # The message names the setting that would let a second one run beside it.
    assert "own data directory (data_dir, or PROVISIONING_DATA_DIR)" in done.stderr
    assert "Traceback" not in done.stderr
    assert "listening" not in done.stdout


def test_a_bad_config_file_exits_1_with_the_message(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\nport = 1\n")
    done = run("--config", str(broken), "serve")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: configuration file {broken} is not valid TOML")
    assert "Traceback" not in done.stderr

    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text("[server]\nprot = 9999\n")
    done = run("--config", str(misspelt), "serve")
    assert done.returncode == 1
    assert "unknown field `prot`" in done.stderr


def test_serve_runs_both_apps_and_stops_both(tmp_path):
    import time

    import httpx

    ports = {"orchestrator": free_port(), "control center": free_port()}
    env = {
        **os.environ,
        "PROVISIONING_DATA_DIR": str(tmp_path / "data"),
        **backend.database_env(tmp_path / "data"),
        "PROVISIONING_SERVER__PORT": str(ports["orchestrator"]),
        "PROVISIONING_CONTROL_CENTER__PORT": str(ports["control center"]),
        "PROVISIONING_ADMIN_PASSWORD": "first-admin-Passw0rd!",
    }
    process = subprocess.Popen(
        [PROVISIONING, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 120  # a safety net: a busy machine starts slowly
        for port in ports.values():
            while True:
                assert time.monotonic() < deadline
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
        login = httpx.post(
            f"http://127.0.0.1:{ports['control center']}/auth/login",
            json={"username": "admin", "password": "first-admin-Passw0rd!"},
        )
        assert login.status_code == 200, login.text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health")
    assert b"first-admin-Passw0rd!" not in output


def test_sigterm_stops_the_server_gracefully(tmp_path):
    process = OrchestratorProcess(tmp_path / "data").start()
    process.stop()
    assert process.process is not None
    assert process.process.returncode == 0
    log = process.log()
    assert "Application shutdown complete." in log
    assert log.rstrip().endswith("orchestrator stopped")


# -- db -------------------------------------------------------------------------------------


def test_db_upgrade_on_a_fresh_data_dir_then_again_is_idempotent(server_env):
    first = run("db", "upgrade", env=server_env)
    assert first.returncode == 0, first.stderr
    assert "upgraded from revision none to" in first.stdout
    second = run("db", "upgrade", env=server_env)
    assert second.returncode == 0, second.stderr
    assert "already at revision" in second.stdout
    current = run("db", "current", env=server_env)
    assert current.returncode == 0
    assert "(up to date)" in current.stdout


# -- workflows ------------------------------------------------------------------------------


def test_servers_create_with_wait_prints_progress_and_exits_0(servers_workflow):
    workflow_id, done = servers_workflow
    assert done.returncode == 0, done.stderr
    assert len(workflow_id) == UUID_LENGTH
    for name in ("web-01", "web-02", "db-01"):
        assert f"Completed server {name}" in done.stdout
    assert f"workflow {workflow_id} Completed: 3/3 tasks" in done.stdout


def test_tasks_list_shows_the_servers_tasks_completed(server, servers_workflow):
    workflow_id, _ = servers_workflow
    listed = run("--json", "tasks", "list", "--workflow", workflow_id, url=server.url)
    assert listed.returncode == 0, listed.stderr
    tasks = json.loads(listed.stdout)
    assert {t["name"]: t["status"] for t in tasks} == {
        "server web-01": "Completed",
        "server web-02": "Completed",
        "server db-01": "Completed",
    }
    table = run("tasks", "list", "--workflow", workflow_id, url=server.url)
    assert table.returncode == 0
    rows = [line for line in table.stdout.splitlines() if "server " in line]
    assert len(rows) == 3
    assert all("Completed" in row for row in rows)
    assert "3 of 3 tasks" in table.stdout


def test_tasks_show_prints_every_field(server, servers_workflow):
    workflow_id, _ = servers_workflow
    tasks = json.loads(
        run("tasks", "list", "--workflow", workflow_id, "--json", url=server.url).stdout
    )
    task_id = tasks[0]["id"]
    shown = run("tasks", "show", task_id, url=server.url)
    assert shown.returncode == 0, shown.stderr
    for field in ("id", "name", "command", "status", "started_at", "attempts", "output"):
        assert any(line.split()[:1] == [field] for line in shown.stdout.splitlines()), field
    assert task_id in shown.stdout
    as_json = json.loads(run("tasks", "show", task_id, "--json", url=server.url).stdout)
    assert as_json["id"] == task_id
    assert as_json["status"] == "Completed"


def test_workflow_list_and_show(server, servers_workflow):
    workflow_id, _ = servers_workflow
    listed = json.loads(run("--json", "workflow", "list", url=server.url).stdout)
    assert workflow_id in [w["id"] for w in listed]
    shown = run("workflow", "show", workflow_id, url=server.url)
    assert shown.returncode == 0, shown.stderr
    assert "create_servers production" in shown.stdout
    assert "server web-01" in shown.stdout


def test_without_wait_only_the_workflow_id_is_printed(server):
    done = run("workflow", "servers", "create", "--infra", "production", url=server.url)
    assert done.returncode == 0, done.stderr
    workflow_id = done.stdout.strip()
    assert len(workflow_id) == UUID_LENGTH
    waited = run("workflow", "wait", workflow_id, url=server.url)
    assert waited.returncode == 0, waited.stderr
    assert f"workflow {workflow_id} Completed" in waited.stdout


def test_cluster_create_in_check_mode_with_wait_exits_0(server):
    done = run(
        *("workflow", "cluster", "create", "buildkit", "--infra", "production"),
        *("--check", "--wait"),
        url=server.url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed cluster buildkit" in done.stdout
    assert "(check mode: nothing was changed)" in done.stdout


def test_taskserv_create_in_check_mode_with_wait_exits_0(server):
    done = run(
        *("workflow", "taskserv", "create", "kubernetes", "--infra", "production"),
        *("--check", "--wait"),
        url=server.url,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Completed taskserv kubernetes on web-01" in done.stdout


def test_an_unknown_infra_exits_1_with_the_api_message(server):
    done = run("workflow", "servers", "create", "--infra", "nowhere", url=server.url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: infra 'nowhere' not found")
    assert done.stderr.rstrip().endswith("(NOT_FOUND)")


def test_waiting_for_a_failing_workflow_exits_1_with_the_task_error(server):
    # A plan the instance does not offer is refused at submit; this one fails as it runs.
    failing = {
        "name": "f1",
        "plan": "1xCPU-2 GB",
        "zone": "de-fra1",
        "simulate": {"fail": "permanent"},
    }
    task = {"name": "a", "provider": "upcloud", "action": "server.create", "params": failing}
    workflow_id = submit(server, [task])
    done = run("workflow", "wait", workflow_id, url=server.url)
    assert done.returncode == 1
    assert "Failed    a" in done.stdout
    assert f"error: workflow {workflow_id} Failed" in done.stderr
    assert "simulated failure: simulate.fail is 'permanent'" in done.stderr


def test_a_retried_task_is_reported_even_to_a_follower_that_attaches_after_it(server):
    flaky = {
        "name": "flaky",
        "provider": "upcloud",
        "action": "noop",
        "retry_initial_delay": 0.05,
        "retry_max_delay": 0.05,
        "params": {"simulate": {"fail_attempts": 1}},
    }
    workflow_id = submit(server, [flaky])
    with server.client() as http:
        assert wait_for_workflow(http, workflow_id)["status"] == "Completed"
    # Attached once all is over: what happened comes from the event log.
    done = run("workflow", "wait", workflow_id, url=server.url)
    assert done.returncode == 0, done.stderr
    assert "Retrying  flaky  attempt 1/3 failed, will retry" in done.stdout
    assert "Completed flaky" in done.stdout


def test_cancel_then_wait_reports_the_cancelled_workflow(server):
    workflow_id = submit(server, [slow_task("slow")])
    cancelled = run("workflow", "cancel", workflow_id, url=server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "Workflow cancelled"
    done = run("workflow", "wait", workflow_id, url=server.url)
    assert done.returncode == 1
    assert f"error: workflow {workflow_id} Cancelled" in done.stderr


def test_ctrl_c_stops_watching_and_says_how_to_cancel(server):
    workflow_id = submit(server, [slow_task("slow")])
    watcher = subprocess.Popen(
        [
            PROVISIONING,
            "--url",
            server.url,
            "--token",
            server.token,
            "workflow",
            "wait",
            workflow_id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert watcher.stdout is not None
        assert "Running" in watcher.stdout.readline()  # it is watching
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=10)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
        run("workflow", "cancel", workflow_id, url=server.url)
    assert watcher.returncode == 130
    assert f"provisioning workflow cancel {workflow_id}" in stderr


# -- errors ---------------------------------------------------------------------------------


def test_an_unreachable_orchestrator_exits_1_and_says_how_to_start_it():
    url = f"http://127.0.0.1:{free_port()}"
    done = run("tasks", "list", url=url)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"error: cannot reach the orchestrator at {url}; is it running? (provisioning serve)"
    )


def test_an_unknown_task_exits_1_with_the_api_code(server):
    done = run("tasks", "show", "no-such-task", url=server.url)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: task 'no-such-task' not found (NOT_FOUND)"


def test_the_url_defaults_to_the_configured_server(server):
    env = {"PROVISIONING_SERVER__PORT": str(server.port), "PROVISIONING_TOKEN": server.token}
    done = run("tasks", "list", "--limit", "1", env=env)
    assert done.returncode == 0, done.stderr


def test_apply_does_one_operation_and_resources_lists_the_inventory(server):
    place = ("-p", "plan=1xCPU-2 GB", "-p", "zone=nl-ams1")
    done = run("apply", "upcloud", "server", "create", "-p", "name=cli-01", *place, url=server.url)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == UUID_LENGTH  # the workflow id, for scripts
    assert run("workflow", "wait", done.stdout.strip(), url=server.url).returncode == 0
    done = run("apply", "upcloud", "server", "read", "-p", "name=cli-01", url=server.url)
    assert done.returncode == 0, done.stderr
    assert "zone  nl-ams1" in done.stdout
    done = run("resources", "list", "--provider", "upcloud", "--kind", "server", url=server.url)
    assert "cli-01" in done.stdout
    assert "resources (1-" in done.stdout.splitlines()[-1]
    bad = ("-p", "name=x", "-p", "plan=huge", "-p", "zone=nl-ams1")
    done = run("apply", "upcloud", "server", "create", *bad, url=server.url)
    assert done.returncode == 1
    assert done.stderr.startswith("error: params.plan: unknown plan 'huge'; valid: ")
    assert done.stderr.rstrip().endswith("(INVALID_INPUT)")
    done = run("apply", "upcloud", "noop", "run", "--json", url=server.url)
    assert len(json.loads(done.stdout)["workflow_id"]) == UUID_LENGTH
    done = run("apply", "upcloud", "server", "create", "-p", "oops", url=server.url)
    assert done.returncode == 2 and "give key=value, or key:=json" in done.stderr
