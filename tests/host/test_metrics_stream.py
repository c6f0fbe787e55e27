"""`/ws/metrics`: authenticated as `/ws` is (Vapor's auth message or `?token=`), then
samples of cpu, memory, disk and network at the interval asked for."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import websockets

from tests.servers import OrchestratorProcess


def mem_total() -> int:
    line = next(
        x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")
    )
    return int(line.split()[1]) * 1024


async def metrics(url: str, first: list[dict], count: int) -> list[dict]:
    """The messages after sending `first` until `count` metric messages came."""
    got: list[dict] = []
    async with websockets.connect(url) as ws:
        for message in first:
            await ws.send(json.dumps(message))
        while len([m for m in got if m.get("type") == "metric"]) < count:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            if got[-1].get("type") == "error":
                break
    return got


def test_vapors_auth_message_then_samples_of_each_metric(server: OrchestratorProcess) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/metrics?interval=0.2"
    auth = {"type": "auth", "payload": {"token": server.token}}
    got = asyncio.run(metrics(url, [auth, {"type": "subscribe"}], 8))
    assert [m["metric"] for m in got] == ["cpu", "memory", "disk", "network"] * 2
    memory = next(m for m in got if m["metric"] == "memory")
    assert memory["data"]["total"] == mem_total()
    assert memory["timestamp"].endswith("Z")
    # Counters only grow from one sample to the next.
    first, second = [m["data"] for m in got if m["metric"] == "network"]
    assert second["bytes_recv"] >= first["bytes_recv"]


def test_a_token_in_the_query_works_and_a_bad_one_is_refused(server: OrchestratorProcess) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/metrics?token={server.token}"
    got = asyncio.run(metrics(url, [{"type": "subscribe"}], 4))
    assert {m["metric"] for m in got} == {"cpu", "memory", "disk", "network"}
    url = f"ws://127.0.0.1:{server.port}/ws/metrics"
    auth = {"type": "auth", "payload": {"token": "not-a-token"}}
    with pytest.raises(websockets.ConnectionClosed):
        got = asyncio.run(metrics(url, [auth, {"type": "subscribe"}], 1))
        assert got[-1]["type"] == "error" and got[-1]["code"] == "UNAUTHORIZED", got
        raise websockets.ConnectionClosed(None, None)


def test_an_interval_out_of_range_is_refused(server: OrchestratorProcess) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/metrics?interval=0&token={server.token}"
    got = asyncio.run(metrics(url, [], 1))
    assert got[-1]["type"] == "error" and got[-1]["code"] == "INVALID_INPUT", got
