"""The host's identity and load (`GET /system/summary|cpu|memory`), checked against
what /proc says; read by an operator, whom the default policies let read the host."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import OrchestratorProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={"PROVISIONING_PROVIDERS__HOST__TYPE": "host"},
    ).start()
    yield process
    process.stop()


def uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def meminfo() -> dict[str, int]:
    found = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, value = line.partition(":")
        found[name] = int(value.split()[0]) * 1024
    return found


def data(client: httpx.Client, path: str) -> dict:
    response = client.get(path)
    assert response.status_code == 200, response.text
    found: dict = response.json()["data"]
    return found


def test_summary_agrees_with_proc(client: httpx.Client) -> None:
    before = uptime()
    summary = data(client, "/api/v1/system/summary")
    after = uptime()
    assert summary["hostname"] == socket.gethostname()
    assert summary["kernel"] == os.uname().release == platform.release()
    # Whole seconds since boot, as /proc/uptime counts them around the request.
    assert int(before) - 1 <= summary["uptime"] <= after + 1
    assert len(summary["load_average"]) == 3
    assert all(isinstance(x, float) and x >= 0 for x in summary["load_average"])
    os_release = Path("/etc/os-release")
    if os_release.exists():
        pretty = next(
            line.split("=", 1)[1].strip('"')
            for line in os_release.read_text().splitlines()
            if line.startswith("PRETTY_NAME=")
        )
        assert summary["os"] == pretty


def test_cpu_agrees_with_proc(client: httpx.Client) -> None:
    cpu = data(client, "/system/cpu")
    processors = [
        line
        for line in Path("/proc/cpuinfo").read_text().splitlines()
        if line.startswith("processor")
    ]
    assert cpu["count_logical"] == len(processors) == len(cpu["per_cpu_percent"])
    assert 0 <= cpu["usage_percent"] <= 100
    # CPU time only grows: /proc/stat's first line (in clock ticks) read after the answer
    # holds at least what the answer said, in seconds.
    ticks = os.sysconf("SC_CLK_TCK")
    user = int(Path("/proc/stat").read_text().split()[1]) / ticks
    assert 0 < cpu["times"]["user"] <= user + 1


def test_memory_agrees_with_proc(client: httpx.Client) -> None:
    memory = data(client, "/system/memory")
    proc = meminfo()
    assert memory["total"] == proc["MemTotal"]
    assert memory["swap"]["total"] == proc["SwapTotal"]
    assert 0 < memory["available"] <= memory["total"]
    assert 0 <= memory["percent"] <= 100


def test_the_reads_are_published_as_operations(client: httpx.Client) -> None:
    (host,) = [p for p in client.get("/providers").json()["data"] if p["name"] == "host"]
    assert host["touches_host"]
    kinds = {k["name"]: k for k in host["kinds"]}
    assert {op["name"] for op in kinds["system"]["operations"]} == {"summary", "cpu", "memory"}
    assert not any(op["mutates"] for op in kinds["system"]["operations"])
    # The generic entry point runs the operation on the instance: that needs `run` on
    # `host:host`, which the operator lacks (the seed's endpoint above only reads).
    response = client.post("/providers/host/system/memory", json={})
    assert response.status_code == 403, response.text
    assert response.json()["details"]["resource"] == "host:host"


def test_without_a_host_instance_the_answer_says_how_to_configure_one(
    tmp_path: Path,
) -> None:
    process = OrchestratorProcess(tmp_path / "data").start()
    try:
        with process.client() as http:
            response = http.get("/system/summary")
            assert response.status_code == 404, response.text
            assert "type 'host'" in response.json()["error"]
    finally:
        process.stop()
