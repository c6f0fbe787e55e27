"""The host's network interfaces through the API, on a namespace the test makes.

The orchestrator's `host` instance is bound to a fresh network namespace holding a veth
pair (`network_namespace`); after each change the kernel, read back through netlink in
that namespace, must agree. Nothing touches the host's own interfaces.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import run
from tests.host.namespaces import link, veth_namespace
from tests.servers import OrchestratorProcess, provision_user, wait_for_workflow


def host_env(namespace: str) -> dict[str, str]:
    """A `host` instance on the namespace; administrators without MFA (API keys)."""
    return {
        "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
        "PROVISIONING_PROVIDERS__HOST__NETWORK_NAMESPACE": namespace,
        "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
    }


@pytest.fixture(scope="module")
def namespace() -> Iterator[tuple[str, str, str]]:
    with veth_namespace() as made:
        yield made


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, namespace: tuple[str, str, str]
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env=host_env(namespace[0]),
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin_key(server: OrchestratorProcess) -> str:
    return provision_user(server.data_dir, server.env, "host-admin", ["admin"])


@pytest.fixture
def admin(server: OrchestratorProcess, admin_key: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as http:
        yield http


@pytest.fixture
def operator(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


def interfaces(http: httpx.Client, prefix: str = "") -> dict[str, dict]:
    response = http.get(f"{prefix}/network/interfaces")
    assert response.status_code == 200, response.text
    return {i["name"]: i for i in response.json()["data"]["interfaces"]}


def send_udp(namespace: str, address: str) -> None:
    """One datagram from inside the namespace (it needs the neighbour's address first)."""
    script = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.sendto(b'x', ('{address}', 9))"
    )
    command = ["ip", "netns", "exec", namespace, sys.executable, "-c", script]
    subprocess.run(command, check=True, timeout=30)


def completed(http: httpx.Client, response: httpx.Response) -> dict:
    assert response.status_code == 202, response.text
    workflow = wait_for_workflow(http, response.json()["data"]["workflow_id"])
    assert workflow["status"] == "Completed", workflow
    return workflow


def test_lists_both_ends_with_the_seeds_fields(
    operator: httpx.Client, namespace: tuple[str, str, str]
) -> None:
    _, a, b = namespace
    found = interfaces(operator, "/api/v1")
    assert {a, b, "lo"} <= set(found)
    end = found[a]
    assert {"name", "mac", "mtu", "state", "type", "addresses", "statistics"} <= set(end)
    assert (end["type"], end["mtu"], end["state"], end["addresses"]) == ("veth", 1500, "down", [])
    assert set(end["statistics"]) >= {"rx_bytes", "tx_bytes", "rx_packets", "tx_packets"}
    assert found["lo"]["type"] == "loopback"
    assert found[b]["mac"] != end["mac"]


def test_up_down_and_addresses_reach_the_kernel(
    admin: httpx.Client, namespace: tuple[str, str, str]
) -> None:
    ns, a, b = namespace
    # Answered at once with the workflow; `wait` holds the answer until it ends.
    response = admin.put(f"/network/interfaces/{a}/up")
    assert response.status_code == 202, response.text
    body = response.json()["data"]
    assert body["resource"] == f"network:{a}" and body["workflow_id"]
    completed(admin, response)
    assert link(ns, a)["up"]
    response = admin.put(f"/api/v1/network/interfaces/{b}/up", params={"wait": True})
    assert response.json()["data"]["status"] == "Completed", response.text
    assert link(ns, b)["up"]
    body = {"address": "10.77.0.1", "netmask": 24, "gateway": "10.77.0.254", "wait": True}
    response = admin.post(f"/network/interfaces/{a}/address", json=body)
    assert response.json()["data"]["status"] == "Completed", response.text
    assert link(ns, a) == {"up": True, "addresses": ["10.77.0.1/24"], "gateways": ["10.77.0.254"]}
    assert "10.77.0.1/24" in interfaces(admin)[a]["addresses"]
    # Traffic from one end (an ARP request for a neighbour) shows in both ends' counters.
    before = interfaces(admin)
    send_udp(ns, "10.77.0.2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = interfaces(admin)
        if (
            now[a]["statistics"]["tx_packets"] > before[a]["statistics"]["tx_packets"]
            and now[b]["statistics"]["rx_packets"] > before[b]["statistics"]["rx_packets"]
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"counters did not grow: {before} -> {now}")
    # Adding it again changes nothing (and leaves nothing for a rollback to undo).
    completed(admin, admin.post(f"/network/interfaces/{a}/address", json=body))
    response = admin.delete(
        f"/network/interfaces/{a}/address",
        params={"address": "10.77.0.1", "netmask": "255.255.255.0", "gateway": "10.77.0.254"},
    )
    completed(admin, response)
    assert link(ns, a) == {"up": True, "addresses": [], "gateways": []}
    completed(admin, admin.put(f"/network/interfaces/{a}/down"))
    assert not link(ns, a)["up"]
    assert interfaces(admin)[a]["state"] == "down"


def test_check_mode_says_what_it_would_do_and_does_nothing(
    admin: httpx.Client, namespace: tuple[str, str, str]
) -> None:
    ns, a, _ = namespace
    before = link(ns, a)
    body = {"address": "10.78.0.1", "netmask": 24, "check_mode": True, "wait": True}
    response = admin.post(f"/network/interfaces/{a}/address", json=body)
    workflow = completed(admin, response)
    tasks = admin.get("/tasks", params={"workflow_id": workflow["id"]}).json()["data"]
    assert "would add 10.78.0.1/24" in tasks[0]["output"], tasks
    assert link(ns, a) == before


@pytest.mark.both_stores
def test_rollback_to_a_checkpoint_removes_the_address_added_since(
    admin: httpx.Client, namespace: tuple[str, str, str]
) -> None:
    ns, _, b = namespace
    checkpoint = admin.post("/rollback/checkpoints", json={"name": "before the address"})
    assert checkpoint.status_code == 201, checkpoint.text
    body = {"address": "fd00:77::1", "netmask": 64, "wait": True}
    response = admin.post(f"/network/interfaces/{b}/address", json=body)
    assert response.json()["data"]["status"] == "Completed", response.text
    assert "fd00:77::1/64" in link(ns, b)["addresses"]
    rollback = admin.post("/rollback/execute", json={"checkpoint_id": checkpoint.json()["data"]})
    assert rollback.status_code == 200, rollback.text
    assert rollback.json()["data"]["success"], rollback.text
    assert "fd00:77::1/64" not in link(ns, b)["addresses"]


def test_an_operator_reads_but_does_not_change_the_host(
    operator: httpx.Client, namespace: tuple[str, str, str]
) -> None:
    ns, a, _ = namespace
    before = link(ns, a)
    response = operator.put(f"/network/interfaces/{a}/up")
    assert response.status_code == 403, response.text
    assert response.json()["code"] == "FORBIDDEN"
    # Nor through the generic endpoint, which needs `run` on host:host besides.
    response = operator.post("/providers/host/network/up", json={"params": {"name": a}})
    assert response.status_code == 403, response.text
    assert link(ns, a) == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PUT", "/network/interfaces/a..b..c..d..e..f/up", None),  # 20 characters
        ("PUT", "/network/interfaces/../up", None),
        ("PUT", "/network/interfaces/..%2Fetc/up", None),
        ("PUT", "/network/interfaces/a%2Fb/down", None),
        ("PUT", "/network/interfaces/eth0%0A/down", None),
        ("POST", "/network/interfaces/pt-a/address", {"address": "10.0.0.300", "netmask": 24}),
        ("POST", "/network/interfaces/pt-a/address", {"address": "10.0.0.3", "netmask": 33}),
        ("POST", "/network/interfaces/pt-a/address", {"address": "fd00::1", "netmask": 129}),
        (
            "POST",
            "/network/interfaces/pt-a/address",
            {"address": "10.0.0.3", "netmask": "255.0.255.0"},
        ),
        ("POST", "/network/interfaces/pt-a/address", {"address": "224.0.0.1", "netmask": 4}),
        (
            "POST",
            "/network/interfaces/pt-a/address",
            {"address": "10.0.0.3", "netmask": 24, "gateway": "10.1.0.1"},
        ),
        (
            "POST",
            "/network/interfaces/pt-a/address",
            {"address": "10.0.0.3", "netmask": 24, "x": 1},
        ),
        ("POST", "/network/interfaces/pt-a/address", {"address": "10.0.0.3"}),
        ("DELETE", "/network/interfaces/pt-a/address?address=10.0.0.3&netmask=-1", None),
    ],
)
def test_bad_input_is_refused_and_the_kernel_is_left_alone(
    admin: httpx.Client, namespace: tuple[str, str, str], method: str, path: str, body: object
) -> None:
    ns, a, b = namespace
    before = (link(ns, a), link(ns, b))
    response = admin.request(method, path, json=body)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["success"] is False
    assert (link(ns, a), link(ns, b)) == before


def test_an_unknown_interface_fails_the_task_not_the_server(
    admin: httpx.Client,
) -> None:
    response = admin.put("/network/interfaces/nosuch0/up", params={"wait": True})
    assert response.status_code == 202, response.text
    assert response.json()["data"]["status"] == "Failed"
    task = admin.get("/tasks", params={"workflow_id": response.json()["data"]["workflow_id"]})
    assert "nosuch0 does not exist" in (task.json()["data"][0]["error"] or "")


def test_without_the_capability_a_change_is_refused_with_permission_denied(
    tmp_path: Path, namespace: tuple[str, str, str]
) -> None:
    """The same orchestrator started without CAP_NET_ADMIN: a change is refused (403
    PERMISSION_DENIED, saying why) before any workflow is stored; reads still work."""
    ns, a, _ = namespace

    class Unprivileged(OrchestratorProcess):
        command = [
            "setpriv",
            "--bounding-set=-net_admin",
            "--inh-caps=-net_admin",
            *OrchestratorProcess.command,
        ]

    process = Unprivileged(
        tmp_path / "data",
        env=host_env(ns),
    ).start()
    try:
        key = provision_user(process.data_dir, process.env, "host-admin", ["admin"])
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=process.url, timeout=60, headers=headers) as http:
            before = link(ns, a)
            response = http.put(f"/network/interfaces/{a}/up")
            assert response.status_code == 403, response.text
            assert response.json()["code"] == "PERMISSION_DENIED"
            assert "lacks CAP_NET_ADMIN" in response.json()["error"]
            assert http.get("/workflows").json()["data"] == []
            assert a in interfaces(http)
            assert link(ns, a) == before
    finally:
        process.stop()


def test_the_cli_lists_and_changes_interfaces(
    server: OrchestratorProcess, admin_key: str, namespace: tuple[str, str, str]
) -> None:
    ns, _, b = namespace
    admin = ("--url", server.url, "--token", admin_key, "host")
    listed = run(*admin, "network", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert b in {i["name"] for i in json.loads(listed.stdout)}
    added = run(*admin, "network", "address-add", b, "10.99.0.1/24", "--wait", timeout=120)
    assert added.returncode == 0, added.stderr
    assert "Completed" in added.stdout
    assert "10.99.0.1/24" in link(ns, b)["addresses"]
    removed = run(*admin, "network", "address-remove", b, "10.99.0.1/24", "--wait", timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert "10.99.0.1/24" not in link(ns, b)["addresses"]
    refused = run(*admin, "network", "up", "bad/name")
    assert refused.returncode == 1 and refused.stderr.startswith("error:"), refused.stderr
