"""Authentication, policies, rate limits and audit on the orchestrator, through real
HTTP against a real server process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from sqlalchemy import select

from control_center.store.models import AuditRecord
from tests.backend import fetch
from tests.servers import OrchestratorProcess, provision_user

BATCH = {
    "name": "small",
    "operations": [
        {
            "id": "s",
            "type": "server_batch",
            "provider": "upcloud",
            "server_configs": [{"name": "sec-1", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
        },
    ],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("security"),
        env={
            "PROVISIONING_AUTH__RATE_LIMIT_BATCH": "3",
            # Streams check their credential again every second here (30 by default).
            "PROVISIONING_SERVER__WS_RECHECK_INTERVAL": "1",
        },
    ).start()
    yield process
    process.stop()


def _client(server: OrchestratorProcess, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=30)


def _key(server: OrchestratorProcess, username: str, roles: list[str]) -> str:
    return provision_user(server.data_dir, server.env, username, roles)


def _audit(server: OrchestratorProcess) -> list[dict]:
    table = AuditRecord.__table__
    return fetch(server.database, select(table).order_by(table.c.seq))


def _error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["success"] is False
    assert response.json()["code"] == code
    return response.json()["error"]


def test_health_and_metrics_are_open_everything_else_needs_a_credential(server):
    with _client(server, None) as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
        for path in (
            "/tasks",
            "/workflows",
            "/batch/operations",
            "/state/statistics",
            "/rollback/checkpoints",
            "/webhooks/deliveries",
            "/api/v1/tasks",
        ):
            _error(anonymous.get(path), 401, "UNAUTHORIZED")
        _error(anonymous.post("/batch/execute", json=BATCH), 401, "UNAUTHORIZED")
    with _client(server, "prov_live_not-a-real-key") as forged:
        _error(forged.get("/tasks"), 401, "UNAUTHORIZED")
    with _client(server, "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.") as unsigned:
        _error(unsigned.get("/tasks"), 401, "UNAUTHORIZED")


def test_a_viewer_reads_but_cannot_submit_and_the_refusal_is_audited(server):
    viewer = _key(server, "viewer-1", ["viewer"])
    with _client(server, viewer) as http:
        assert http.get("/tasks").status_code == 200
        message = _error(http.post("/batch/execute", json=BATCH), 403, "FORBIDDEN")
        assert "batches" in message
        _error(http.post("/rollback/checkpoints", json={"name": "x"}), 403, "FORBIDDEN")
    denied = [r for r in _audit(server) if r["result"] == "denied"]
    actions = {(r["action"], r["details"]["path"]) for r in denied}
    assert ("batches:execute", "/batch/execute") in actions
    assert ("checkpoints:create", "/rollback/checkpoints") in actions
    by_viewer = [r for r in denied if r["user_id"] and r["details"]["path"] == "/batch/execute"]
    assert by_viewer
    assert by_viewer[-1]["details"]["code"] == "FORBIDDEN"
    anonymous = [r for r in denied if r["user_id"] is None]
    assert {r["details"]["code"] for r in anonymous} == {"UNAUTHORIZED"}


def test_deleting_a_checkpoint_is_the_delete_action_on_it_and_audited(server):
    with server.client() as http:
        checkpoint = http.post("/rollback/checkpoints", json={"name": "cp"}).json()["data"]
    viewer = _key(server, "viewer-2", ["viewer"])
    with _client(server, viewer) as http:
        message = _error(http.delete(f"/rollback/checkpoints/{checkpoint}"), 403, "FORBIDDEN")
        assert f"checkpoints:{checkpoint}" in message
        assert http.get(f"/rollback/checkpoints/{checkpoint}").status_code == 200
    with server.client() as http:  # an operator may
        assert http.delete(f"/rollback/checkpoints/{checkpoint}").status_code == 200
    records = [r for r in _audit(server) if r["resource"] == f"checkpoints:{checkpoint}"]
    assert [(r["action"], r["result"]) for r in records] == [
        ("checkpoints:delete", "denied"),
        ("checkpoints:delete", "success"),
    ]


def test_an_operator_runs_batches_and_every_mutation_is_audited(server):
    with server.client() as http:
        response = http.post("/batch/execute", json=BATCH)
        assert response.status_code == 202
        assert response.headers["X-RateLimit-Limit"] == "3"
    records = [r for r in _audit(server) if r["details"].get("path") == "/batch/execute"]
    assert records[-1]["result"] == "success"
    assert records[-1]["resource"] == "batches:*"
    assert records[-1]["ip"] == "127.0.0.1"


def test_the_batch_rate_limit_refuses_the_fourth_submission_in_a_minute(server):
    key = _key(server, "operator-limits", ["operator"])
    with _client(server, key) as http:
        codes = [http.post("/batch/execute", json=BATCH).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        refused = http.post("/batch/execute", json=BATCH)
        _error(refused, 429, "RATE_LIMITED")
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["X-RateLimit-Reset"]) > 0
        assert http.get("/tasks").status_code == 200  # other endpoints still answer


def test_a_deny_policy_wins_at_once_and_a_revoked_key_stops_working(server):
    from control_center.policy_set import create_policy
    from control_center.store.api_keys import find_api_key, revoke_api_key
    from control_center.store.records import NewPolicy
    from control_center.tokens import digest
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine

    key = _key(server, "operator-deny", ["operator"])
    with _client(server, key) as http:
        assert http.get("/workflows").status_code == 200

    async def change() -> None:
        engine = create_engine(
            load_settings(
                environ={k: v for k, v in server.env.items() if k.startswith("PROVISIONING_")}
            )
        )
        try:
            await create_policy(
                engine,
                NewPolicy(
                    name="no-workflow-listing",
                    rules=[
                        {
                            "effect": "Deny",
                            "resource": "workflows:*",
                            "action": ["list"],
                            "condition": "user.username == 'operator-deny'",
                        }
                    ],
                ),
            )
            stored = await find_api_key(engine, digest(key))
            assert stored is not None
            await revoke_api_key(engine, stored.id)
        finally:
            await engine.dispose()

    with _client(server, key) as http:
        asyncio.run(change())
        _error(http.get("/workflows"), 401, "UNAUTHORIZED")  # revoked
    other = _key(server, "operator-deny-2", ["operator"])
    with _client(server, other) as http:
        assert http.get("/workflows").status_code == 200  # the Deny names one user


def _one_event(server: OrchestratorProcess) -> None:
    """At least one event in the log, for a stream opened with since=0 to replay."""
    with _client(server, server.token) as http:
        assert http.post("/rollback/checkpoints", json={"name": "an event"}).status_code == 201


def test_the_event_stream_takes_a_token_in_the_query_or_a_first_auth_message(server):
    url = f"ws://127.0.0.1:{server.port}/ws"
    _one_event(server)

    async def refused_at_handshake() -> int:
        try:
            async with websockets.connect(f"{url}?token=nope") as ws:
                await ws.recv()
        except websockets.InvalidStatus as refused:
            return refused.response.status_code
        return 0

    async def first_message(token: str, nested: bool = False) -> tuple[dict, int | None]:
        auth = {"type": "auth", **({"payload": {"token": token}} if nested else {"token": token})}
        async with websockets.connect(f"{url}?since=0") as ws:
            await ws.send(json.dumps(auth))
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            try:
                await asyncio.wait_for(ws.recv(), 0.5)
            except websockets.ConnectionClosed as closed:
                return first, closed.rcvd.code if closed.rcvd else None
            except TimeoutError:
                pass
            return first, None

    assert asyncio.run(refused_at_handshake()) == 403
    refusal, code = asyncio.run(first_message("nope"))
    assert refusal["type"] == "error"
    assert refusal["code"] == "UNAUTHORIZED"
    assert code == 1008
    event, code = asyncio.run(first_message(server.token))
    assert "event_type" in event  # since=0 replays the log
    assert code is None
    # the host clients' shape: {"type": "auth", "payload": {"token": …}}
    event, code = asyncio.run(first_message(server.token, nested=True))
    assert "event_type" in event
    assert code is None
    refusal, code = asyncio.run(first_message("nope", nested=True))
    assert (refusal["code"], code) == ("UNAUTHORIZED", 1008)


def test_each_server_a_submission_creates_is_authorized(server):
    import asyncio as aio

    from control_center.policy_set import create_policy
    from control_center.store.records import NewPolicy
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine

    async def deny() -> None:
        engine = create_engine(
            load_settings(
                environ={k: v for k, v in server.env.items() if k.startswith("PROVISIONING_")}
            )
        )
        try:
            await create_policy(
                engine,
                NewPolicy(
                    name="no-production-databases",
                    rules=[
                        {
                            "effect": "Deny",
                            "resource": "servers:prod-db-*",
                            "action": ["create"],
                            "condition": None,
                        }
                    ],
                ),
            )
        finally:
            await engine.dispose()

    aio.run(deny())
    key = _key(server, "operator-items", ["operator"])
    task = {
        "name": "db",
        "provider": "aws",
        "action": "server.create",
        "params": {"name": "prod-db-1", "plan": "t3.micro", "zone": "eu-west-1"},
    }
    with _client(server, key) as http:
        before = http.get("/workflows").headers["X-Total-Count"]
        message = _error(
            http.post("/workflows", json={"name": "x", "tasks": [task]}), 403, "FORBIDDEN"
        )
        assert "servers:prod-db-1" in message
        assert http.get("/workflows").headers["X-Total-Count"] == before  # nothing stored
        task["params"]["name"] = "web-9"
        assert http.post("/workflows", json={"name": "y", "tasks": [task]}).status_code == 202
    denied = [r for r in _audit(server) if r["resource"] == "servers:prod-db-1"]
    assert denied
    assert denied[-1]["result"] == "denied"


def test_unauthenticated_streams_are_few_per_address_and_wait_briefly(server):
    """Sockets that never authenticate cost a connection each: one address may hold a
    few at a time (8), across every socket route, each for a few seconds (3), then it is
    told why and closed."""
    url = f"ws://127.0.0.1:{server.port}/ws"
    _one_event(server)

    async def scenario() -> tuple[dict, list[dict]]:
        waiting = [await websockets.connect(url) for _ in range(8)]
        try:
            # Another route counts against the same eight.
            async with websockets.connect(f"{url}/metrics") as ninth:
                refused = json.loads(await asyncio.wait_for(ninth.recv(), 30))
            # The eight are cut off once their wait is over, with the reason.
            ends = [json.loads(await asyncio.wait_for(ws.recv(), 60)) for ws in waiting]
        finally:
            for ws in waiting:
                await ws.close()
        # Their places are free again: an authenticated first message is taken.
        async with websockets.connect(f"{url}?since=0") as ws:
            await ws.send(json.dumps({"type": "auth", "token": server.token}))
            assert "event_type" in json.loads(await asyncio.wait_for(ws.recv(), 30))
        return refused, ends

    refused, ends = asyncio.run(scenario())
    assert refused["code"] == "RATE_LIMITED"
    assert "unauthenticated" in refused["error"]
    assert {end["code"] for end in ends} == {"UNAUTHORIZED"}
    assert "within 3 s" in ends[0]["error"]


LOCAL_TASK = {
    "name": "read-secrets",
    "provider": "local",
    "action": "run",
    "params": {"command": "sh", "args": ["-c", 'cat "$PROVISIONING_DATA_DIR/jwt.key"']},
}
COMMAND_BATCH = {
    "name": "cmds",
    "operations": [
        {
            "id": "c",
            "type": "command_batch",
            "commands": [{"name": "env", "command": "env"}],
        }
    ],
}


def test_running_commands_on_the_host_is_a_permission_operators_do_not_have(server):
    key = _key(server, "plain-operator", ["operator"])
    with _client(server, key) as http:
        before = http.get("/workflows").headers["X-Total-Count"]
        message = _error(
            http.post("/workflows", json={"name": "x", "tasks": [LOCAL_TASK]}), 403, "FORBIDDEN"
        )
        assert "'run' on 'local:local'" in message
        _error(http.post("/batch/execute", json=COMMAND_BATCH), 403, "FORBIDDEN")
        assert http.get("/workflows").headers["X-Total-Count"] == before  # nothing stored
        # Simulated clouds are not the host: operators still run those.
        cloud = {"name": "c", "provider": "upcloud", "action": "noop", "params": {}}
        assert http.post("/workflows", json={"name": "y", "tasks": [cloud]}).status_code == 202
    denied = [r for r in _audit(server) if r["resource"] == "local:local"]
    assert denied
    assert {r["result"] for r in denied} == {"denied"}


def test_a_policy_grants_host_commands_to_whom_it_names(server):
    # The suite's operator has a policy of its own allowing `run` on `local:*`.
    with _client(server, server.token) as http:
        harmless = {**LOCAL_TASK, "params": {"command": "true"}}
        response = http.post("/workflows", json={"name": "ok", "tasks": [harmless]})
        assert response.status_code == 202, response.text


def test_rolling_back_host_commands_needs_the_same_permission(server):
    with _client(server, server.token) as http:
        checkpoint = http.post("/rollback/checkpoints", json={"name": "before cmd"}).json()
        undoable = {
            **LOCAL_TASK,
            "name": "undoable",
            "params": {"command": "true", "undo": {"command": "true"}},
        }
        workflow = http.post(
            "/workflows", json={"name": "undoable", "tasks": [undoable], "wait": True}
        ).json()["data"]
        assert http.get(f"/workflows/{workflow}").json()["data"]["status"] == "Completed"
    key = _key(server, "rollback-operator", ["operator"])
    with _client(server, key) as http:
        message = _error(
            http.post("/rollback/execute", json={"checkpoint_id": checkpoint["data"]}),
            403,
            "FORBIDDEN",
        )
        assert "'run' on 'local:local'" in message


def test_an_administrators_command_reads_nothing_of_the_orchestrators_secrets(tmp_path):
    """The attack an operator could once run, now run by an administrator (who may run
    commands): the command reaches neither the data directory (the JWT key, the
    database) nor the orchestrator's environment."""
    from control_center.tokens import signing_key
    from orchestrator.settings import load_settings

    data_dir = tmp_path / "data"
    secret_password = "Admin-Password-Never-Shown-42"
    server = OrchestratorProcess(
        data_dir,
        env={
            "PROVISIONING_ADMIN_PASSWORD": secret_password,
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
        },
    )
    data_dir.mkdir()
    key = signing_key(load_settings(environ={"PROVISIONING_DATA_DIR": str(data_dir)}))
    server.start()
    try:
        admin = provision_user(data_dir, server.env, "an-admin", ["admin"])
        script = (
            f'cat "{data_dir}/jwt.key" "{data_dir}/secrets.key" "{data_dir}/provisioning.db"; '
            'echo "pw=$PROVISIONING_ADMIN_PASSWORD"; env; true'
        )
        attack = {
            "name": "read-secrets",
            "provider": "local",
            "action": "run",
            "params": {"command": "sh", "args": ["-c", script]},
        }
        with _client(server, admin) as http:
            response = http.post("/workflows", json={"name": "x", "tasks": [attack], "wait": True})
            assert response.status_code == 202, response.text
            workflow_id = response.json()["data"]
            (task,) = http.get("/tasks", params={"workflow_id": workflow_id}).json()["data"]
        assert task["status"] == "Completed", task
        output = task["output"]
        assert "Permission denied" in output  # it tried, and was refused
        assert key not in output
        assert secret_password not in output
        assert "PROVISIONING_" not in output
        assert "SQLite format" not in output
    finally:
        server.stop()


@pytest.mark.parametrize("route", ["/ws", "/ws/metrics"])
def test_a_stream_ends_when_its_key_is_revoked(server, route):
    """A socket lives only as long as its credential: a revoked API key (as a logout or
    a disabled account) ends the stream, with the reason, at the next check."""
    key = provision_user(server.data_dir, server.env, f"revoked-{route.count('/')}", ["operator"])
    with _client(server, key) as client:
        key_id = client.get("/api-keys").json()["data"][0]["id"]

    async def scenario() -> dict:
        async with websockets.connect(f"ws://127.0.0.1:{server.port}{route}?token={key}") as ws:
            if route == "/ws/metrics":
                await ws.send(json.dumps({"type": "subscribe"}))
            with _client(server, key) as client:
                assert client.delete(f"/api-keys/{key_id}").status_code == 200
            while True:  # readings or events until the refusal
                message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if message.get("type") == "error":
                    with pytest.raises(websockets.ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 30)
                    return message

    refused = asyncio.run(scenario())
    assert refused["code"] == "UNAUTHORIZED"
    assert "revoked" in refused["error"]
