"""Signed webhooks from the outbox, against a real receiver on loopback (the example
receiver), which is down at first; with a kill -9 of the orchestrator in between."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from orchestrator.ids import new_id
from orchestrator.metrics import Metrics
from orchestrator.settings import ConfigError, load_settings
from orchestrator.store.engine import create_engine, ensure_schema
from orchestrator.store.models import WebhookDelivery
from orchestrator.webhooks import WebhookDispatcher
from tests.backend import settings_env
from tests.servers import REPO, OrchestratorProcess, free_port, wait_for_workflow

SECRET = "hook-secret-7f3a"
EVENTS = ["task.completed", "task.failed", "workflow.completed", "batch.completed"]


def _receiver(port: int, log: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "webhook_receiver.py"),
            "--port",
            str(port),
            "--secret",
            SECRET,
            "--log",
            str(log),
        ],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    assert b"listening" in process.stderr.readline()
    return process


def _stop(receiver: subprocess.Popen[bytes]) -> None:
    receiver.terminate()
    receiver.wait(5)
    assert receiver.stderr is not None
    receiver.stderr.close()


def _orchestrator(data: Path, port: int) -> OrchestratorProcess:
    endpoints = (
        f'[{{url = "http://127.0.0.1:{port}/hook", events = {json.dumps(EVENTS)}, '
        f'secret = "{SECRET}"}}]'
    )
    return OrchestratorProcess(
        data,
        env={
            "PROVISIONING_WEBHOOKS__ENABLED": "true",
            "PROVISIONING_WEBHOOKS__ENDPOINTS": endpoints,
            "PROVISIONING_WEBHOOKS__INITIAL_DELAY": "0.2",
            "PROVISIONING_WEBHOOKS__MAX_DELAY": "0.5",
            "PROVISIONING_WEBHOOKS__MAX_ATTEMPTS": "100",
        },
    )


def _deliveries(http: httpx.Client, **params) -> list[dict]:
    return http.get("/webhooks/deliveries", params={"limit": 1000, **params}).json()["data"]


def _received(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_deliveries_survive_a_down_receiver_and_a_killed_orchestrator(tmp_path):
    port = free_port()
    log = tmp_path / "received.jsonl"
    data = tmp_path / "data"
    first = _orchestrator(data, port).start()
    try:
        with first.client() as http:
            a = http.post("/workflows/servers/create", json={"infra": "production"}).json()["data"]
            wait_for_workflow(http, a)
            # The receiver is down: deliveries wait in the outbox, with their errors.
            _until(
                lambda: (
                    all(d["attempts"] >= 2 for d in _deliveries(http))
                    and len(_deliveries(http)) == 4
                )
            )
            pending = _deliveries(http, status="pending")
            assert len(pending) == 4
            assert all("ConnectError" in d["last_error"] for d in pending)
        first.kill()  # with everything still undelivered
    finally:
        first.stop()

    receiver = _receiver(port, log)
    second = _orchestrator(data, port).start()
    try:
        with second.client() as http:
            _until(lambda: len(_deliveries(http, status="delivered")) == 4)
            b = http.post("/workflows/servers/create", json={"infra": "production"}).json()["data"]
            wait_for_workflow(http, b)
            _until(lambda: len(_deliveries(http, status="delivered")) == 8)
        second.kill()  # everything acknowledged: nothing may be sent again
    finally:
        second.stop()
    third = _orchestrator(data, port).start()
    try:
        time.sleep(1.5)  # several dispatcher rounds
        with third.client() as http:
            assert len(_deliveries(http, status="delivered")) == 8
    finally:
        third.stop()
        _stop(receiver)

    received = _received(log)
    assert len(received) == 8
    assert not any(r["duplicate"] for r in received)
    by_workflow: dict[str, list[str]] = {}
    for record in received:
        assert set(record) == {"id", "duplicate", "event", "timestamp", "data"}
        key = record["data"].get("workflow_id") or record["data"]["task_id"]
        by_workflow.setdefault(record["event"], []).append(key)
    assert sorted(by_workflow["workflow.completed"]) == sorted([a, b])
    assert len(by_workflow["task.completed"]) == 6
    # task events carry the task's output, as the reference API's example shows
    outputs = [r["data"]["output"] for r in received if r["event"] == "task.completed"]
    assert len(outputs) == 6 and all(isinstance(o, str) and o for o in outputs), outputs
    assert all("output" not in r["data"] for r in received if r["event"].startswith("workflow."))


def test_a_bad_signature_is_refused_by_the_example_receiver(tmp_path):
    port = free_port()
    receiver = _receiver(port, tmp_path / "log")
    try:
        body = json.dumps(
            {"event": "task.completed", "timestamp": "x", "data": {}, "signature": "sha256=00"}
        )
        response = httpx.post(
            f"http://127.0.0.1:{port}/hook",
            content=body,
            headers={"X-Webhook-Timestamp": str(int(time.time())), "X-Signature-256": "sha256=00"},
        )
        assert response.status_code == 401
    finally:
        _stop(receiver)


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ('[{url = "ftp://x", events = ["task.completed"], secret = "s"}]', "url"),
        ('[{url = "http://x", events = ["task.done"], secret = "s"}]', "task.done"),
        ('[{url = "http://x", events = ["task.completed"], secret = ""}]', "secret"),
    ],
)
def test_webhook_configuration_is_validated_at_start(endpoints, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"PROVISIONING_WEBHOOKS__ENDPOINTS": endpoints})


async def test_two_dispatchers_on_one_database_never_claim_the_same_delivery(tmp_path):
    """Two `serve` processes on one PostgreSQL database (or the one SQLite file) each run
    a dispatcher: a due delivery is claimed by one of them only, and is due again once
    the claim lapses (its claimant died before saying how the post went)."""
    endpoints = f'[{{url = "http://127.0.0.1:{free_port()}/hook", events = ["*"], secret = "s"}}]'
    settings = load_settings(
        environ=settings_env(
            tmp_path,
            PROVISIONING_WEBHOOKS__ENABLED="true",
            PROVISIONING_WEBHOOKS__ENDPOINTS=endpoints,
            PROVISIONING_WEBHOOKS__TIMEOUT="0.1",
        )
    )
    engines = [create_engine(settings), create_engine(settings)]
    try:
        await ensure_schema(engines[0], settings)
        now = datetime.now(UTC)
        rows = [
            {
                "id": new_id(),
                "event_seq": seq,
                "event": "task.completed",
                "url": settings.webhooks.endpoints[0].url,
                "payload": {"seq": seq},
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now - timedelta(seconds=1),
                "created_at": now,
            }
            for seq in range(1, 81)
        ]
        async with engines[0].begin() as connection:
            await connection.execute(insert(WebhookDelivery), rows)
        first, second = (WebhookDispatcher(e, settings.webhooks, Metrics()) for e in engines)
        by_first: set[str] = set()
        by_second: set[str] = set()
        for _ in range(10):  # both at once, as two processes would
            (a, _), (b, upcoming) = await asyncio.gather(first.claim_due(), second.claim_due())
            if not a and not b:
                break
            by_first |= {d.id for d in a}
            by_second |= {d.id for d in b}
        else:
            raise AssertionError("claimed deliveries were still due")
        assert not by_first & by_second
        assert by_first | by_second == {r["id"] for r in rows}
        assert upcoming is not None  # all claimed: due again when the claims lapse
        await asyncio.sleep(upcoming - time.time() + 0.05)
        again, _ = await second.claim_due()
        assert [d.event_seq for d in again] == list(range(1, 51))
    finally:
        for engine in engines:
            await engine.dispose()
