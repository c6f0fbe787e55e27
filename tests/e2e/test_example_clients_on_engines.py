"""The documented client flows of examples/clients/ that change something real: the VM
API's quick start boots a QEMU guest, and a self-registered account deploys an app on
podman with its API key. Each runs as a script against one live orchestrator URL, with
only the base URL, the credentials and the names of the machine's images given.

QEMU and podman tests run in the SQLite pass only, as the engine domains' own tests do
(tests/conftest.py): what they add over those is the client's side, not the store's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.accounts import new_user
from tests.containers.conftest import engine  # noqa: F401  (the session's podman)
from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import REPO, OrchestratorProcess
from tests.vms import guest
from tests.vms.conftest import images  # noqa: F401  (the busybox guest image)

pytestmark = [pytest.mark.slow, pytest.mark.backend_independent]

CLIENTS = REPO / "examples" / "clients"


@pytest.fixture(scope="module")
def one_url(
    tmp_path_factory: pytest.TempPathFactory,
    images: Path,  # noqa: F811
    engine: Engine,  # noqa: F811
) -> Iterator[OrchestratorProcess]:
    data = tmp_path_factory.mktemp("example-clients-on-engines")
    process = OrchestratorProcess(
        data,
        env={
            "PROVISIONING_AUTH__REGISTRATION_ENABLED": "true",
            "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "1000",
            "PROVISIONING_PROVIDERS__QEMU__IMAGES": str(images),
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    )
    try:
        yield process.start()
    finally:
        process.stop()
        guest.kill_all(data / "vms")


def _run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(CLIENTS / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_vm_quick_start_boots_a_guest_and_deletes_it(one_url: OrchestratorProcess) -> None:
    user = new_user(one_url, ["operator"])
    out = _run(
        "vm_quickstart.py",
        one_url.url,
        user["username"],
        user["password"],
        "--create",
        *("--os", "busybox", "--cpu", "1", "--memory", "64", "--disk", "1", "--delete"),
    )
    assert "VMs: 0" in out, out
    assert "Status: running" in out, out
    assert "Delete: 202" in out and "After delete: gone" in out, out
    # The guest's QEMU ran, and is gone with the VM.
    assert guest.running_pids(one_url.data_dir / "vms") == {}, out


def test_a_self_registered_member_deploys_an_app_with_its_api_key(
    one_url: OrchestratorProcess,
    engine: Engine,  # noqa: F811
) -> None:
    out = _run(
        "account_flow.py",
        one_url.url,
        *("--deploy", engine.image, "--registry-user", USERNAME, "--registry-password", PASSWORD),
    )
    assert "Register: 201" in out, out
    assert "Deploy: 201 pending" in out, out
    assert "Ready: 1/1" in out, out
    assert "Answer: " in out, out  # the app's own page, through the deployment's URL
    assert "Delete: 20" in out and "Deleted" in out, out
    assert PASSWORD not in out
    # Nothing of it is left on the engine.
    assert not [name for name in engine.containers() if name.startswith("hello-")]


def test_the_host_client_lists_the_engines_containers(
    one_url: OrchestratorProcess,
    engine: Engine,  # noqa: F811
) -> None:
    user = new_user(one_url, ["operator"])
    out = _run("host_client.py", one_url.url, user["username"], user["password"])
    # Every container the engine knows, the build's own working containers among them.
    known = engine.podman("ps", "--all", "--external", "--format", "{{.ID}}").stdout.split()
    assert f"Containers: {len(known)}" in out, out
