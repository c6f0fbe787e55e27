"""The event stream and Prometheus metrics, with real clients against a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import time

import httpx
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.servers import wait_for_workflow


def ws_url(server, query: str = "") -> str:
    joiner = "&" if query else "?"
    return f"ws://127.0.0.1:{server.port}/ws{query}{joiner}token={server.token}"


async def collect(url: str, until, timeout: float = 15.0) -> list[dict]:
    """Messages from the stream until `until(messages)` is true."""
    messages: list[dict] = []
    async with websockets.connect(url) as ws:
        deadline = time.monotonic() + timeout
        while not until(messages):
            remaining = deadline - time.monotonic()
            assert remaining > 0, messages
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), remaining)))
    return messages


def _ended(workflow_id):
    def check(messages):
        return any(
            m["event_type"] == "WorkflowStatusChanged"
            and m["metadata"]["workflow_id"] == workflow_id
            and m["data"]["status"] in ("Completed", "Failed")
            for m in messages
        )

    return check


def test_every_transition_of_a_workflow_arrives_in_order(server, client):
    async def scenario():
        async with websockets.connect(ws_url(server)) as ws:
            await asyncio.sleep(0.1)
            workflow_id = client.post(
                "/workflows/servers/create", json={"infra": "production"}
            ).json()["data"]
            messages = []
            while not _ended(workflow_id)(messages):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
            return workflow_id, messages

    workflow_id, messages = asyncio.run(scenario())
    mine = [m for m in messages if m["metadata"]["workflow_id"] == workflow_id]
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    for message in mine:
        assert set(message) == {"event_type", "timestamp", "data", "metadata", "seq"}
    types = [m["event_type"] for m in mine]
    assert types[0] == "WorkflowSubmitted"
    task_events = [m for m in mine if m["event_type"] == "TaskStatusChanged"]
    by_task: dict[str, list[str]] = {}
    for m in task_events:
        by_task.setdefault(m["data"]["task_id"], []).append(m["data"]["status"])
    assert len(by_task) == 3
    assert all(statuses == ["Running", "Completed"] for statuses in by_task.values())
    # The log agrees with the stream.
    tasks = client.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
    assert set(by_task) == {t["id"] for t in tasks}


def test_a_reconnecting_client_gets_exactly_what_it_missed(server, client):
    first = client.post("/workflows/servers/create", json={"infra": "production"}).json()["data"]
    wait_for_workflow(client, first)
    everything = asyncio.run(collect(ws_url(server, "?since=0"), _ended(first)))
    cut = everything[len(everything) // 2]["seq"]
    resumed = asyncio.run(collect(ws_url(server, f"?since={cut}"), _ended(first)))
    assert [m["seq"] for m in resumed] == [m["seq"] for m in everything if m["seq"] > cut]
    assert resumed == [m for m in everything if m["seq"] > cut]


def test_filters_by_workflow_and_event_type(server, client):
    workflow_id = client.post("/workflows/servers/create", json={"infra": "production"}).json()[
        "data"
    ]
    wait_for_workflow(client, workflow_id)
    url = ws_url(server, f"?since=0&workflow_id={workflow_id}&event_type=WorkflowStatusChanged")
    messages = asyncio.run(collect(url, _ended(workflow_id)))
    assert {m["event_type"] for m in messages} == {"WorkflowStatusChanged"}
    assert {m["metadata"]["workflow_id"] for m in messages} == {workflow_id}
    assert [m["data"]["status"] for m in messages] == ["Running", "Completed"]


def test_a_subscribe_message_changes_the_filter(server, client):
    async def scenario():
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send(
                json.dumps({"type": "subscribe", "event_types": ["WorkflowStatusChanged"]})
            )
            await asyncio.sleep(0.2)
            workflow_id = client.post(
                "/workflows/servers/create", json={"infra": "production"}
            ).json()["data"]
            messages = []
            while not _ended(workflow_id)(messages):
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
            return messages

    assert {m["event_type"] for m in asyncio.run(scenario())} == {"WorkflowStatusChanged"}


def test_a_bad_since_is_refused_with_a_message(server):
    async def scenario():
        async with websockets.connect(ws_url(server, "?since=abc")) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 5))

    message = asyncio.run(scenario())
    assert message["type"] == "error"
    assert message["code"] == "INVALID_INPUT"


def test_metrics_parse_and_count_what_ran(server, client):
    before = _samples(client)
    body = {
        "name": "metrics",
        "tasks": [
            {"name": "ok-1", "provider": "upcloud", "action": "noop"},
            {"name": "ok-2", "provider": "upcloud", "action": "noop"},
            {
                "name": "flaky",
                "provider": "upcloud",
                "action": "noop",
                "max_attempts": 2,
                "retry_initial_delay": 0.01,
                "params": {"simulate": {"fail_attempts": 1}},
            },
            {
                "name": "bad",
                "provider": "upcloud",
                "action": "noop",
                "max_attempts": 1,
                "params": {"simulate": {"fail": True}},
            },
            {"name": "after-bad", "provider": "upcloud", "action": "noop", "dependencies": ["bad"]},
        ],
    }
    workflow_id = client.post("/workflows", json=body).json()["data"]
    assert wait_for_workflow(client, workflow_id)["status"] == "Failed"
    after = _samples(client)

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert delta("orchestrator_tasks_total", status="completed") == 3
    assert delta("orchestrator_tasks_total", status="failed") == 1
    assert delta("orchestrator_tasks_total", status="cancelled") == 1
    assert delta("orchestrator_task_retries_total") == 1
    assert delta("orchestrator_task_duration_seconds_count") == 5  # attempts that ran
    assert delta("orchestrator_task_scheduling_delay_seconds_count") == 5
    assert after[("orchestrator_tasks_running", ())] == 0
    assert delta("orchestrator_workflows", status="Failed") == 1
    assert (
        delta("orchestrator_http_requests_total", method="POST", route="/workflows", status="202")
        == 1
    )
    assert ("process_resident_memory_bytes", ()) in after


def _samples(client: httpx.Client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _stalled_websocket(port: int, path: str) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads: a raw
    socket with a tiny receive buffer, so the server's sends back up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


#: A generous bound, not a timing: the 10,000 tasks below take seconds on an idle
#: machine (tests/perf/bench_executor.py has the figures), minutes on a busy one.
PATIENCE = 600


@pytest.mark.timeout(2 * PATIENCE)
def test_a_client_that_never_reads_is_cut_off_and_the_work_finishes(tmp_path):
    from tests.servers import OrchestratorProcess

    server = OrchestratorProcess(
        tmp_path / "data",
        env={
            "PROVISIONING_SERVER__WS_SEND_TIMEOUT": "0.5",
            "PROVISIONING_SERVER__MAX_BODY_BYTES": "16000000",
        },
    ).start()
    # More events than the kernel buffers between the two ends hold (4 MB for the
    # server's socket here).
    padding = "x" * 180
    tasks = [
        {"name": f"t{i}-{padding}", "provider": "upcloud", "action": "noop"} for i in range(10_000)
    ]
    stalled = _stalled_websocket(server.port, f"/ws?since=0&token={server.token}")
    try:
        with httpx.Client(
            base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {server.token}"}
        ) as http:
            workflow_id = http.post(
                "/workflows", json={"name": "many", "tasks": tasks, "parallel_limit": 16}
            ).json()["data"]
            # The stalled client stays connected while the work runs: the executor never
            # waits for a stream client (the stream reads the log), so the work ends.
            workflow = wait_for_workflow(http, workflow_id, PATIENCE)
            # The server gave up on the client: its connection is closed on that side,
            # once uvicorn has waited for a reply to its close frame (10 s), after the
            # refusal's own wait (1 s), from whenever the cut-off came: the workflow
            # may end first.
            deadline = time.monotonic() + PATIENCE
            while time.monotonic() < deadline and not _closed_by_peer(stalled):
                time.sleep(0.1)
            assert _closed_by_peer(stalled)
            # And a new client resumes where it wants, from the log.
            resumed = asyncio.run(
                collect(
                    ws_url(
                        server,
                        f"?since=0&workflow_id={workflow_id}&event_type=WorkflowStatusChanged",
                    ),
                    _ended(workflow_id),
                )
            )
    finally:
        stalled.close()
        server.stop()
    assert workflow["status"] == "Completed"
    assert [m["data"]["status"] for m in resumed] == ["Running", "Completed"]


def _closed_by_peer(sock: socket.socket) -> bool:
    """Drain what is buffered; True once the peer has closed (EOF or reset)."""
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_a_user_holds_at_most_ten_event_streams(server):
    async def scenario():
        open_streams = [await websockets.connect(ws_url(server)) for _ in range(10)]
        try:
            async with websockets.connect(ws_url(server)) as eleventh:
                refusal = json.loads(await asyncio.wait_for(eleventh.recv(), 5))
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(eleventh.recv(), 5)
        finally:
            for stream in open_streams:
                await stream.close()
        await asyncio.sleep(0.2)
        async with websockets.connect(ws_url(server)) as again:  # a slot is free again
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(again.recv(), 0.3)
        return refusal, closed.value.rcvd

    refusal, close = asyncio.run(scenario())
    assert refusal["code"] == "RATE_LIMITED"
    assert close.code == 1008
