"""Deployments' domains, logs (`follow`, the WebSocket), metrics from the engine's stats,
the per-user quota and `deployment_status_changed` notifications, on the tests' podman
service, through an orchestrator process configured with a domain suffix and a quota.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.containers.engine import PASSWORD, USERNAME, Engine
from tests.servers import REPO, OrchestratorProcess, free_port, provision_user, wait_for_workflow

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

AUTH = {"username": USERNAME, "password": PASSWORD}
FAST = {"path": "/", "period_seconds": 1, "timeout_seconds": 1, "failure_threshold": 3}
QUOTA = 2
SECRET = "deployment-hooks-5e1b"


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """The example webhook receiver (it verifies signatures); its port and its log."""
    port = free_port()
    log = tmp_path_factory.mktemp("hooks") / "received.jsonl"
    receiver = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "examples" / "webhook_receiver.py"),
            *("--port", str(port), "--secret", SECRET, "--log", str(log)),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert receiver.stderr is not None and b"listening" in receiver.stderr.readline()
        yield port, log
    finally:
        receiver.terminate()
        receiver.wait(10)
        assert receiver.stderr is not None
        receiver.stderr.close()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine, hooks: tuple[int, Path]
) -> Iterator[OrchestratorProcess]:
    endpoint = (
        f'[{{url = "http://127.0.0.1:{hooks[0]}/hook", '
        f'events = ["deployment_status_changed"], secret = "{SECRET}"}}]'
    )
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
            "PROVISIONING_PROVIDERS__ENGINE__QUOTA_PER_USER": str(QUOTA),
            "PROVISIONING_PROVIDERS__ENGINE__DOMAIN_SUFFIX": "apps.test",
            "PROVISIONING_WEBHOOKS__ENABLED": "true",
            "PROVISIONING_WEBHOOKS__ENDPOINTS": endpoint,
            "PROVISIONING_WEBHOOKS__INITIAL_DELAY": "0.2",
            "PROVISIONING_WEBHOOKS__MAX_DELAY": "0.5",
            # An administrator's API key without enrolling MFA first.
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
        },
    ).start()
    yield process
    process.stop()


def user(server: OrchestratorProcess, name: str, roles: list[str]) -> httpx.Client:
    key = provision_user(server.data_dir, server.env, name, roles)
    return httpx.Client(base_url=server.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


@pytest.fixture(scope="module")
def alice(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with user(server, "alice", ["operator"]) as client:
        yield client


@pytest.fixture(scope="module")
def bob(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with user(server, "bob", ["operator"]) as client:
        yield client


def deploy(http: httpx.Client, engine: Engine, app: str, replicas: int = 1) -> str:
    body = {
        "app_name": app,
        "image": engine.image,
        "port": 8080,
        "replicas": replicas,
        "health_check": FAST,
        "registry_auth": AUTH,
    }
    response = http.post("/v1/deployments", json=body)
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert wait_for_workflow(http, data["workflow_id"], timeout=180)["status"] == "Completed"
    ident: str = data["id"]
    return ident


def remove(http: httpx.Client, ident: str) -> None:
    gone = http.delete(f"/v1/deployments/{ident}")
    assert gone.status_code == 200, gone.text
    workflow_id = gone.json()["data"]["workflow_id"]
    assert wait_for_workflow(http, workflow_id, timeout=180)["status"] == "Completed"


def engine_connections(engine: Engine) -> int:
    """Connections open to the engine's socket (accepted ones carry its path)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.endswith(str(engine.socket)) and line.split()[5] == "03")


def settles_to_zero(count: Callable[[], int], patience: float = 60) -> bool:
    """Whether `count` reaches 0 within a generous `patience` (a safety timeout)."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if count() == 0:
            return True
        time.sleep(0.2)
    return False


def poke(ports: list[int]) -> None:
    for port in ports:
        httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=5)


def error(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False and body["code"] and body["error"], body
    return body


@pytest.mark.both_stores
def test_domains_are_host_names_unique_across_deployments_and_become_the_url(
    alice: httpx.Client, bob: httpx.Client, engine: Engine
) -> None:
    mine = deploy(alice, engine, "dom-a")
    theirs = deploy(bob, engine, "dom-b")
    try:
        # With a suffix and no domain, the url is the suffix's.
        assert alice.get(f"/v1/deployments/{mine}").json()["data"]["url"] == (
            "http://dom-a.apps.test"
        )
        assert alice.get(f"/v1/deployments/{mine}/domains").json()["data"] == {"domains": []}

        added = alice.post(f"/v1/deployments/{mine}/domains", json={"domain": "Shop.Example.com"})
        assert added.status_code == 201, added.text
        entry = added.json()["data"]
        assert entry["domain"] == "shop.example.com" and entry["deployment_id"] == mine

        listed = alice.get(f"/v1/deployments/{mine}/domains").json()["data"]["domains"]
        assert [d["domain"] for d in listed] == ["shop.example.com"]
        detail = alice.get(f"/deployments/{mine}").json()["data"]
        assert detail["url"] == "http://shop.example.com"
        assert detail["urls"][:2] == ["http://shop.example.com", "http://dom-a.apps.test"]
        summary = alice.get("/v1/deployments").json()["data"]["deployments"]
        assert [d["url"] for d in summary if d["id"] == mine] == ["http://shop.example.com"]

        bad = [
            "shop/example.com",
            "shop..example.com",
            "shop.example.com:80",
            "http://shop.example.com",
            "-shop.example.com",
            "localhost",
            "a" * 64 + ".example.com",
            ".".join(["abcdefghi"] * 26),  # 259 characters
            "shop.example.com\x00",
            "",
        ]
        for domain in bad:
            body = error(alice.post(f"/v1/deployments/{mine}/domains", json={"domain": domain}))
            assert "domain" in json.dumps(body), (domain, body)
        # Taken: by this deployment, or by another user's (whose name is not told).
        again = alice.post(f"/v1/deployments/{mine}/domains", json={"domain": "SHOP.example.com"})
        assert again.status_code == 409 and "already mapped" in again.text
        taken = bob.post(f"/v1/deployments/{theirs}/domains", json={"domain": "shop.example.com"})
        assert taken.status_code == 409 and mine not in taken.text
        # Another's deployment is not found, whatever the domain.
        assert alice.post(
            f"/v1/deployments/{theirs}/domains", json={"domain": "x.example.com"}
        ).status_code in (403, 404)

        assert alice.delete(f"/v1/deployments/{mine}/domains/nope").status_code == 404
        gone = alice.delete(f"/v1/deployments/{mine}/domains/{entry['id']}")
        assert gone.status_code == 200, gone.text
        assert alice.get(f"/v1/deployments/{mine}/domains").json()["data"] == {"domains": []}
        # Freed: the other deployment may have it now (removed by name this time).
        moved = bob.post(f"/v1/deployments/{theirs}/domains", json={"domain": "shop.example.com"})
        assert moved.status_code == 201, moved.text
        assert bob.delete(f"/v1/deployments/{theirs}/domains/shop.example.com").status_code == 200
    finally:
        remove(alice, mine)
        remove(bob, theirs)


def test_the_per_user_quota_is_a_clear_409_naming_the_limit(
    server: OrchestratorProcess, engine: Engine
) -> None:
    with user(server, "carol", ["operator"]) as carol:
        made = [deploy(carol, engine, f"quota-{n}") for n in range(QUOTA)]
        try:
            body = {"app_name": "quota-x", "image": engine.image, "port": 8080, "replicas": 1}
            refused = carol.post("/v1/deployments", json=body)
            assert refused.status_code == 409, refused.text
            assert refused.json()["code"] == "QUOTA_EXCEEDED"
            assert f"at most {QUOTA}" in refused.text and "quota_per_user" in refused.text
        finally:
            for ident in made:
                remove(carol, ident)


def test_logs_tail_follow_and_the_websocket_follow_every_replica(
    alice: httpx.Client, engine: Engine, server: OrchestratorProcess
) -> None:
    ident = deploy(alice, engine, "logs-app", replicas=2)
    try:
        for tail in (0, -1, 10**9, "x"):
            error(alice.get(f"/v1/deployments/{ident}/logs", params={"tail": tail}))
        ports = [
            r["host_port"]
            for r in alice.get(f"/v1/deployments/{ident}/status").json()["data"]["instances"]
        ]
        names = {
            r["name"]
            for r in alice.get(f"/v1/deployments/{ident}/status").json()["data"]["instances"]
        }

        # follow: NDJSON lines, the last one of each replica, then new ones as they are
        # written (httpd -v logs each request; nothing else does once they are ready):
        # once a line came from each replica, a request to each makes one more each.
        counts: dict[str, int] = {}
        with alice.stream(
            "GET", f"/v1/deployments/{ident}/logs", params={"tail": 1, "follow": "true"}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            for raw in stream.iter_lines():
                entry = json.loads(raw)
                assert set(entry) == {"timestamp", "level", "message", "source"}
                counts[entry["source"]] = counts.get(entry["source"], 0) + 1
                if set(counts) == names and sum(counts.values()) == len(names):
                    poke(ports)
                if all(counts.get(name, 0) >= 2 for name in names):
                    break
        assert set(counts) == names

        # The WebSocket: ?token=, then the same lines as {"type": "log"} messages.
        token = alice.headers["Authorization"].removeprefix("Bearer ")
        url = server.url.replace("http", "ws") + f"/v1/deployments/{ident}/logs/stream"
        counts = {}
        with connect(f"{url}?token={token}&tail=1", open_timeout=30) as socket:
            while not all(counts.get(name, 0) >= 2 for name in names):
                message = json.loads(socket.recv(timeout=60))
                assert message["type"] == "log", message
                source = message["data"]["source"]
                counts[source] = counts.get(source, 0) + 1
                if set(counts) == names and sum(counts.values()) == len(names):
                    poke(ports)
            # One engine stream per replica while it lasts (what must go after).
            assert engine_connections(engine) >= len(names)
        # Without credentials: refused with a reason, then closed.
        with connect(url, open_timeout=30) as socket:
            socket.send(json.dumps({"type": "auth", "token": "wrong"}))
            refused = json.loads(socket.recv(timeout=30))
            assert refused["type"] == "error" and refused["code"], refused
        # No engine stream is left behind once the streams closed: the engine's socket
        # has no connection left open (each read closes its own at once).
        assert settles_to_zero(lambda: engine_connections(engine)), engine_connections(engine)
    finally:
        remove(alice, ident)


def test_metrics_come_from_the_engine_for_each_replica(alice: httpx.Client, engine: Engine) -> None:
    ident = deploy(alice, engine, "metrics-app", replicas=2)
    try:
        ports = [
            r["host_port"]
            for r in alice.get(f"/v1/deployments/{ident}/status").json()["data"]["instances"]
        ]
        for port in ports:
            for _ in range(5):
                httpx.get(f"http://127.0.0.1:{port}/", trust_env=False, timeout=5)
        response = alice.get(f"/v1/deployments/{ident}/metrics")
        assert response.status_code == 200, response.text
        metrics = response.json()["data"]["metrics"]
        assert len(metrics["replicas"]) == 2 and metrics["total"]["running"] == 2
        for replica in metrics["replicas"]:
            assert replica["running"] is True
            assert replica["cpu_seconds"] > 0
            assert replica["memory_bytes"] > 0
            assert replica["memory_limit_bytes"] >= replica["memory_bytes"]
            # Health checks and our requests went through the replica's network.
            assert replica["network"]["rx_bytes"] > 0 and replica["network"]["tx_bytes"] > 0
            assert replica["restarts"] == 0
        assert metrics["total"]["memory_bytes"] == sum(
            r["memory_bytes"] for r in metrics["replicas"]
        )
    finally:
        remove(alice, ident)


def token_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def until_status(socket: Any, ident: str, status: str) -> list[dict[str, Any]]:
    """Notifications until `ident` reports `status`; every one read."""
    read: list[dict[str, Any]] = []
    while True:
        message = json.loads(socket.recv(timeout=180))
        read.append(message)
        if message.get("deployment_id") == ident and message["data"]["status"] == status:
            return read


@pytest.mark.both_stores
def test_deployment_status_changed_on_notifications_ws_and_webhooks(
    alice: httpx.Client,
    bob: httpx.Client,
    engine: Engine,
    server: OrchestratorProcess,
    hooks: tuple[int, Path],
) -> None:
    base = server.url.replace("http", "ws")
    with (
        user(server, "root-admin", ["admin"]) as admin,
        connect(
            f"{base}/v1/ws/notifications",
            additional_headers={"Authorization": f"Bearer {token_of(alice)}"},
            open_timeout=30,
        ) as alice_ws,
        connect(f"{base}/v1/ws/notifications?token={token_of(bob)}", open_timeout=30) as bob_ws,
        connect(f"{base}/v1/ws/notifications", open_timeout=30) as admin_ws,
        connect(
            f"{base}/ws?token={token_of(alice)}&event_type=deployment_status_changed",
            open_timeout=30,
        ) as events_ws,
    ):
        admin_ws.send(json.dumps({"type": "auth", "token": token_of(admin)}))
        mine = deploy(alice, engine, "note-a")
        theirs = deploy(bob, engine, "note-b")
        remove(alice, mine)
        remove(bob, theirs)

        # Each user sees only their own deployment's changes, in order.
        seen = until_status(alice_ws, mine, "deleted")
        assert {m["deployment_id"] for m in seen} == {mine}
        assert [m["data"]["status"] for m in seen] == ["pending", "running", "updating", "deleted"]
        first = seen[1]
        assert first["type"] == "deployment_status_changed"
        assert first["data"]["url"] == "http://note-a.apps.test"
        assert first["data"]["app_name"] == "note-a" and first["timestamp"]
        assert first["user_id"] and isinstance(first["seq"], int)
        seen = until_status(bob_ws, theirs, "deleted")
        assert {m["deployment_id"] for m in seen} == {theirs}
        # An administrator sees both.
        seen = until_status(admin_ws, theirs, "deleted")
        assert {m["deployment_id"] for m in seen} == {mine, theirs}

        # /ws: beside the log's events, in the same shape as the log's.
        statuses = []
        while len(statuses) < 8:
            message = json.loads(events_ws.recv(timeout=60))
            assert message["event_type"] == "deployment_status_changed", message
            statuses.append((message["data"]["deployment_id"], message["data"]["data"]["status"]))
        assert (mine, "running") in statuses and (theirs, "deleted") in statuses

    # Webhooks: signed (the receiver verified them), in the seed's shape.
    log = hooks[1]
    deadline = time.monotonic() + 60
    received: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        received = (
            [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        )
        if len([r for r in received if r["data"]["deployment_id"] in (mine, theirs)]) >= 8:
            break
        time.sleep(0.2)
    ours = [r for r in received if r["data"]["deployment_id"] == mine]
    assert [r["data"]["data"]["status"] for r in ours] == [
        "pending",
        "running",
        "updating",
        "deleted",
    ]
    assert all(r["event"] == "deployment_status_changed" for r in ours)
