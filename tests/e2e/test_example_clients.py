"""The documented client flows in examples/clients/, each run as a script against one
live orchestrator URL, with only the base URL and the credentials given."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.api.accounts import new_user
from tests.servers import REPO, OrchestratorProcess

CLIENTS = REPO / "examples" / "clients"


@pytest.fixture(scope="module")
def one_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("example-clients"),
        env={
            "PROVISIONING_AUTH__REGISTRATION_ENABLED": "true",
            "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "1000",
        },
    ).start()
    yield process
    process.stop()


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, str(CLIENTS / script), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_provisioning_client_logs_in_runs_refreshes_and_logs_out(one_url):
    user = new_user(one_url, ["operator"])
    done = _run("provisioning_login.py", one_url.url, user["username"], user["password"])
    assert f"Logged in as {user['username']}" in done.stdout
    assert "Status: Completed" in done.stdout
    assert "Refreshed: new token expires at" in done.stdout
    assert "After logout: 401" in done.stdout


def test_the_vm_quick_start_logs_in_and_lists(one_url):
    user = new_user(one_url, ["operator"])
    done = _run("vm_quickstart.py", one_url.url, user["username"], user["password"])
    assert done.stdout.startswith(("VMs: ", "VM API: NO_HYPERVISOR"))


def test_the_host_client_logs_in_and_lists_containers(one_url):
    user = new_user(one_url, ["operator"])
    done = _run("host_client.py", one_url.url, user["username"], user["password"])
    assert done.stdout.startswith("Token expires at ")
    assert "Containers: " in done.stdout


def test_the_account_flow_registers_makes_keys_and_reaches_deployments(one_url):
    done = _run("account_flow.py", one_url.url)
    assert "Register: 201" in done.stdout
    assert "API key: prov_live_" in done.stdout
    assert "API keys: 2, page 2: ['" in done.stdout
    assert "Deployments: " in done.stdout
