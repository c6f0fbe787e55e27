"""`provisioning batch|checkpoint|rollback|restore|state` end to end: the CLI as a
subprocess against a real server (fast simulated clouds).

The tests of this module share one server and follow the seed's story: deploy, take a
checkpoint, fail an upgrade that rolls itself back, roll back, restore. Output is not a
terminal, so `--wait` prints one plain line per change.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import backend
from tests.e2e.test_cli import UUID_LENGTH, run
from tests.servers import PROVISIONING, REPO, OrchestratorProcess, interruptible

#: On PostgreSQL, copies naming that store as their `storage_backend`.
BATCHES = backend.example_batches(REPO)


def show(server: OrchestratorProcess, batch_id: str) -> dict[str, Any]:
    done = run("--json", "batch", "show", batch_id, url=server.url)
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def statuses(batch: dict[str, Any]) -> dict[str, str]:
    return {op["id"]: op["status"] for op in batch["operations"]}


def write_batch(path: Path, name: str, operations: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"name": name, "operations": operations}))
    return path


def submitted_id(done: subprocess.CompletedProcess[str]) -> str:
    """The id from `batch <id> submitted`, the first line of a `--wait` submission."""
    first = (done.stdout or done.stderr).splitlines()[0]
    assert first.startswith("batch ") and first.endswith(" submitted"), first
    return first.split()[1]


@pytest.fixture(scope="module")
def deployed(server: OrchestratorProcess) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`batch submit multi_cloud.yaml --wait`, once for the module."""
    done = run("batch", "submit", str(BATCHES / "multi_cloud.yaml"), "--wait", url=server.url)
    return submitted_id(done), done


@pytest.fixture(scope="module")
def checkpoint_id(server: OrchestratorProcess, deployed: tuple[str, Any]) -> str:
    done = run(*("checkpoint", "create", "before_major_update", "-d", "before v2"), url=server.url)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def failed_upgrade(
    server: OrchestratorProcess, checkpoint_id: str
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`batch submit upgrade_that_fails.yaml --wait`, after the checkpoint."""
    path = BATCHES / "upgrade_that_fails.yaml"
    done = run("batch", "submit", str(path), "--wait", url=server.url)
    return submitted_id(done), done


# -- submitting and following ---------------------------------------------------------------


def test_submit_with_wait_follows_the_batch_and_exits_0(deployed):
    batch_id, done = deployed
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(batch_id) == UUID_LENGTH
    lines = done.stdout.splitlines()
    assert any("Completed   upcloud_servers  2/2 tasks" in line for line in lines)
    assert any("Completed   aws_taskservs  3/3 tasks" in line for line in lines)
    assert any("batch      Completed   multi_cloud_deployment" in line for line in lines)
    assert lines[-1] == f"batch {batch_id} Completed: 2/2 operations completed"


def test_without_wait_only_the_id_is_printed_then_batch_wait_follows(server):
    path = str(BATCHES / "multi_cloud.yaml")
    done = run("batch", "submit", path, url=server.url)
    assert done.returncode == 0, done.stderr
    batch_id = done.stdout.strip()
    assert len(batch_id) == UUID_LENGTH
    waited = run("batch", "wait", batch_id, url=server.url)
    assert waited.returncode == 0, waited.stderr
    assert f"batch {batch_id} Completed" in waited.stdout


def test_a_batch_from_stdin_is_read_as_yaml(server):
    document = (BATCHES / "multi_cloud.yaml").read_text()
    done = subprocess.run(
        [PROVISIONING, "--url", server.url, "--token", server.token, "batch", "submit", "-"],
        input=document,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == UUID_LENGTH
    assert run("batch", "wait", done.stdout.strip(), url=server.url).returncode == 0


def test_a_failing_batch_rolls_back_exits_1_and_says_so(failed_upgrade):
    batch_id, done = failed_upgrade
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: batch {batch_id} failed and was rolled back" in done.stderr
    assert "kubernetes_upgrade/taskserv kubernetes on app-03" in done.stderr
    assert "simulated failure" in done.stderr
    assert "Failed      kubernetes_upgrade/taskserv kubernetes on app-03" in done.stdout
    assert "RolledBack  new_servers/server app-03  undone" in done.stdout
    assert "batch      RolledBack  upgrade_that_fails" in done.stdout


def test_batch_show_has_the_operations_rolled_back_with_their_results(server, failed_upgrade):
    batch_id, _ = failed_upgrade
    batch = show(server, batch_id)
    assert batch["status"] == "RolledBack"
    assert statuses(batch) == {
        "new_servers": "RolledBack",
        "runtime": "RolledBack",
        "kubernetes_upgrade": "Failed",
    }
    created = batch["operations"][0]["results"]["server app-03"]
    assert created["status"] == "Completed"
    assert created["compensation"]["status"] == "Completed"

    table = run("batch", "show", batch_id, url=server.url)
    assert table.returncode == 0, table.stderr
    assert "upgrade_that_fails" in table.stdout
    rows = table.stdout.splitlines()
    assert any(row.split()[:2] == ["new_servers", "RolledBack"] for row in rows)
    assert any(row.split()[:2] == ["kubernetes_upgrade", "Failed"] for row in rows)
    assert "simulated failure: simulate.fail is set" in table.stdout


def test_batch_list(server, deployed):
    batch_id, _ = deployed
    listed = json.loads(run("--json", "batch", "list", url=server.url).stdout)
    assert batch_id in [b["batch_id"] for b in listed]
    table = run("batch", "list", "--status", "Completed", "--wide", url=server.url)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if batch_id in line)
    assert "multi_cloud_deployment" in row
    assert "Completed" in row
    assert "batches" in table.stdout.splitlines()[-1]


def test_wait_with_json_prints_the_final_batch_on_stdout(server, tmp_path):
    path = write_batch(
        tmp_path / "one.json",
        "one_server",
        [
            {
                "id": "one",
                "type": "server_batch",
                "provider": "upcloud",
                "server_configs": [{"name": "json-01", "plan": "1xCPU-2 GB", "zone": "de-fra1"}],
            }
        ],
    )
    done = run("--json", "batch", "submit", str(path), "--wait", url=server.url)
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout)
    assert batch["status"] == "Completed"
    assert batch["operations"][0]["results"]["server json-01"]["status"] == "Completed"
    assert "Completed   one" in done.stderr


# -- cancelling -----------------------------------------------------------------------------


def test_cancelling_a_finished_batch_says_it_already_ended(server, deployed):
    batch_id, _ = deployed
    done = run("batch", "cancel", batch_id, url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Batch {batch_id} already ended (Completed)"


def test_ctrl_c_stops_watching_then_cancel_then_wait_reports_cancelled(server, tmp_path):
    slow = {
        "id": "slow",
        "type": "server_batch",
        "provider": "upcloud",
        "server_configs": [{"name": "slow-01", "plan": "1xCPU-2 GB", "zone": "de-fra1"}],
        "simulate": {"latency": 30},
    }
    path = write_batch(tmp_path / "slow.json", "slow", [slow])
    batch_id = run("batch", "submit", str(path), url=server.url).stdout.strip()
    watcher = subprocess.Popen(
        [PROVISIONING, "--url", server.url, "--token", server.token, "batch", "wait", batch_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert watcher.stdout is not None
        assert "batch " in watcher.stdout.readline()  # it is watching
        watcher.send_signal(signal.SIGINT)
        _, stderr = watcher.communicate(timeout=10)
        assert watcher.returncode == 130
        assert f"provisioning batch cancel {batch_id}" in stderr
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
        cancelled = run("batch", "cancel", batch_id, url=server.url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "Operation cancelled"
    done = run("batch", "wait", batch_id, url=server.url)
    assert done.returncode == 1
    assert f"error: batch {batch_id} Cancelled" in done.stderr


# -- checkpoints, rollback, restore ---------------------------------------------------------


def test_checkpoint_create_list_and_show(server, checkpoint_id):
    assert len(checkpoint_id) == UUID_LENGTH
    listed = json.loads(run("checkpoint", "list", "--json", url=server.url).stdout)
    mine = next(c for c in listed if c["id"] == checkpoint_id)
    assert mine["name"] == "before_major_update"
    assert mine["description"] == "before v2"
    table = run("checkpoint", "list", "--wide", url=server.url)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if checkpoint_id in line)
    assert "before_major_update" in row
    assert "before v2" in row

    shown = json.loads(run("--json", "checkpoint", "show", checkpoint_id, url=server.url).stdout)
    assert shown["id"] == checkpoint_id
    assert shown["resources"] >= 5  # the deployed servers and taskservs
    assert isinstance(shown["operations_count"], int)
    text = run("checkpoint", "show", checkpoint_id, url=server.url)
    assert text.returncode == 0, text.stderr
    assert any(
        line.split()[:2] == ["name", "before_major_update"] for line in text.stdout.splitlines()
    )


def test_rollback_to_the_checkpoint_undoes_what_ran_since(
    server, checkpoint_id, failed_upgrade, tmp_path
):
    extra = {
        "id": "extra",
        "type": "server_batch",
        "provider": "upcloud",
        "server_configs": [{"name": "extra-01", "plan": "1xCPU-2 GB", "zone": "de-fra1"}],
    }
    path = write_batch(tmp_path / "extra.json", "after_checkpoint", [extra])
    submitted = run("batch", "submit", str(path), "--wait", url=server.url)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted_id(submitted)
    # What a rollback would run, before it runs: in the checkpoint and asked first.
    shown = run("checkpoint", "show", checkpoint_id, url=server.url).stdout
    # (Other tests of the module may have run work since the checkpoint too.)
    assert "a rollback to it would run, newest work first (" in shown, shown
    assert "undo_blocked" not in shown
    assert "  undo extra/server extra-01" in shown, shown

    done = run("rollback", "--yes", "--checkpoint", checkpoint_id, url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "  undo extra/server extra-01" in done.stderr.split("undo the work", 1)[0], done.stderr
    assert " Completed: " in done.stdout
    assert " undone, 0 failed" in done.stdout
    # the failed upgrade had undone its own work: only the new batch was left to undo
    assert statuses(show(server, batch_id)) == {"extra": "RolledBack"}

    again = run("--json", "rollback", "--yes", "--checkpoint", checkpoint_id, url=server.url)
    assert again.returncode == 0, again.stderr
    nothing = json.loads(again.stdout)
    assert isinstance(nothing.pop("duration"), float)
    rollback_id = nothing.pop("rollback_id")
    assert nothing == {
        "success": True,
        "operations_executed": 0,
        "operations_failed": 0,
        "status": "Completed",
    }
    # an empty run, read back like any other
    with server.client() as client:
        recorded = client.get(f"/workflows/{rollback_id}").json()["data"]
    assert recorded["status"] == "Completed"
    assert "nothing to roll back" in again.stderr


def test_rollback_of_operations(server, deployed):
    batch_id, _ = deployed
    listed = json.loads(run("--json", "batch", "list", url=server.url).stdout)
    latest = next(
        b["batch_id"]
        for b in listed
        if "aws_taskservs" in statuses(b) and statuses(b)["aws_taskservs"] == "Completed"
    )
    done = run("rollback", "--yes", "--operations", "aws_taskservs", url=server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 undone, 0 failed" in done.stdout
    assert statuses(show(server, latest))["aws_taskservs"] == "RolledBack"

    if latest != batch_id:
        qualified = run(
            "rollback", "--yes", "--operations", f"{batch_id}:aws_taskservs", url=server.url
        )
        assert qualified.returncode == 0, qualified.stderr
        assert statuses(show(server, batch_id))["aws_taskservs"] == "RolledBack"
    rollbacks = run("--json", "state", "statistics", url=server.url)
    assert json.loads(rollbacks.stdout)["rollback"]["total_rollbacks"] >= 2


def test_restore_a_checkpoint(server, checkpoint_id):
    done = run("restore", checkpoint_id, url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"State restored from checkpoint {checkpoint_id}"


def test_checkpoint_delete(server):
    created = run("checkpoint", "create", "throwaway", url=server.url)
    assert created.returncode == 0, created.stderr
    checkpoint_id = created.stdout.strip()
    done = run("checkpoint", "delete", "--yes", checkpoint_id, url=server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"Checkpoint {checkpoint_id} deleted"
    assert run("checkpoint", "show", checkpoint_id, url=server.url).returncode == 1
    again = run("--json", "checkpoint", "delete", "--yes", checkpoint_id, url=server.url)
    assert again.returncode == 1
    assert again.stderr.strip() == f"error: checkpoint '{checkpoint_id}' not found (NOT_FOUND)"

    other = run("checkpoint", "create", "another", url=server.url).stdout.strip()
    done = run("--json", "checkpoint", "delete", "--yes", other, url=server.url)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": other, "deleted": True}


# -- state ----------------------------------------------------------------------------------


def test_state_health_metrics_statistics_and_progress(server, deployed):
    health = run("state", "health", url=server.url)
    assert health.returncode == 0, health.stderr
    assert health.stdout.split()[:2] == ["overall", "Healthy"]
    assert "batch_coordinator" in health.stdout

    metrics = json.loads(run("--json", "state", "metrics", url=server.url).stdout)
    assert metrics["total_workflows"] >= 1
    assert "cpu_usage" in metrics["system_load"]
    assert run("state", "metrics", url=server.url).returncode == 0

    stats = run("state", "statistics", url=server.url)
    assert stats.returncode == 0, stats.stderr
    assert "checkpoints" in stats.stdout

    batch_id, _ = deployed
    progress = json.loads(run("state", "progress", batch_id, "--json", url=server.url).stdout)
    assert progress["progress"] == 100.0
    assert progress["completed_steps"] == progress["total_steps"] == 5
    text = run("state", "progress", batch_id, url=server.url)
    assert "5/5 steps" in text.stdout


# -- errors ---------------------------------------------------------------------------------


def test_an_unknown_batch_exits_1_with_the_api_message(server):
    for command in (("show",), ("wait",), ("cancel",)):
        done = run("batch", *command, "no-such-batch", url=server.url)
        assert done.returncode == 1, command
        assert done.stdout == ""
        assert done.stderr.strip() == "error: batch 'no-such-batch' not found (NOT_FOUND)"


def test_unknown_checkpoints_and_operations_exit_1(server):
    done = run("rollback", "--yes", "--checkpoint", "nope", url=server.url)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: checkpoint 'nope' not found (NOT_FOUND)"
    done = run("rollback", "--yes", "--operations", "no_such_op", url=server.url)
    assert done.returncode == 1
    assert "operation 'no_such_op' not found in any batch (NOT_FOUND)" in done.stderr
    assert run("restore", "nope", url=server.url).returncode == 1
    assert run("checkpoint", "show", "nope", url=server.url).returncode == 1


def test_rollback_needs_exactly_one_target(server):
    assert run("rollback", url=server.url).returncode == 2
    both = run("rollback", "--yes", "--checkpoint", "a", "--operations", "b", url=server.url)
    assert both.returncode == 2
    assert "exactly one of --checkpoint ID or --operations A,B" in both.stderr


def test_a_bad_batch_file_exits_1_naming_the_file(server, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\noperations: []\n")
    done = run("batch", "submit", str(broken), url=server.url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"error: {broken}: the request body is not valid YAML")
    assert done.stderr.rstrip().endswith("(INVALID_INPUT)")

    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"name": "x", "operations": [{"id": "a", "type": "nope"}]}))
    done = run("batch", "submit", str(invalid), "--wait", url=server.url)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {invalid}: invalid batch")

    missing = run("batch", "submit", str(tmp_path / "missing.yaml"), url=server.url)
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr


# -- a server of its own: local commands, slow retries ----------------------------------------


def test_a_command_batch_and_a_retry_on_a_server_of_their_own(tmp_path):
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    slow_retries = {
        "PROVISIONING_EXECUTOR__RETRY__INITIAL_DELAY": "1.0",
        "PROVISIONING_EXECUTOR__RETRY__MAX_DELAY": "1.0",
    }
    own = OrchestratorProcess(tmp_path / "data", workspace=workspace, env=slow_retries).start()
    try:
        done = run("batch", "submit", str(BATCHES / "commands.yaml"), "--wait", url=own.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert list(workspace.iterdir()) == []  # the example builds in /tmp, then cleans up
        assert "Completed   report" in done.stdout

        flaky = {
            "id": "flaky",
            "type": "server_batch",
            "provider": "upcloud",
            "server_configs": [{"name": "flaky-01", "plan": "1xCPU-2 GB", "zone": "de-fra1"}],
            "simulate": {"fail_attempts": 1},
        }
        path = write_batch(tmp_path / "flaky.json", "flaky", [flaky])
        done = run("batch", "submit", str(path), "--wait", url=own.url)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (
            "Retrying    flaky/server flaky-01  attempt 1/3 failed, will retry: "
            "simulated failure: attempt 1 of 1 set to fail"
        ) in done.stdout
        assert "Completed   flaky  1/1 tasks" in done.stdout
    finally:
        own.stop()
