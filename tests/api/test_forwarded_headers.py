"""`X-Forwarded-For` is believed from configured proxies only, in both apps: a client on
loopback (where local users and local tasks are) cannot choose the address that rate
limits, policies and the audit log see."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select

from control_center.store.models import AuditRecord
from tests.backend import fetch, settings_env
from tests.control_center.conftest import error_of
from tests.control_center.servers import ControlCenterProcess
from tests.control_center.test_rate_limits import fresh_window
from tests.servers import OrchestratorProcess, provision_user

FROM_ELSEWHERE = {"X-Forwarded-For": "10.9.9.9"}


def _allow_tasks_from_10_9_9_9(data_dir: Path) -> None:
    """A policy letting anyone list tasks from 10.9.9.9 (and nothing else)."""
    from control_center.policies import compile_rules
    from control_center.policy_set import create_policy, seed_default_policies
    from control_center.store.records import NewPolicy
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine, upgrade

    rules = [
        {
            "effect": "Allow",
            "resource": "tasks:*",
            "action": ["list"],
            "condition": "request.ip == '10.9.9.9'",
        }
    ]
    compile_rules(rules)

    async def work() -> None:
        engine = create_engine(load_settings(environ=settings_env(data_dir)))
        try:
            await upgrade(engine)
            await seed_default_policies(engine)
            await create_policy(engine, NewPolicy(name="from-the-office", rules=rules))
        finally:
            await engine.dispose()

    asyncio.run(work())


def _orchestrator(data_dir: Path, env: dict[str, str]) -> tuple[OrchestratorProcess, str]:
    server = OrchestratorProcess(data_dir, env=env)
    data_dir.mkdir(parents=True)
    _allow_tasks_from_10_9_9_9(data_dir)
    server.start()
    return server, provision_user(data_dir, server.env, "roleless", [])


def _ips(server: OrchestratorProcess) -> set[str | None]:
    table = AuditRecord.__table__
    return {row["ip"] for row in fetch(server.database, select(table))}


def test_a_forwarded_address_from_a_client_does_not_satisfy_a_policy_on_request_ip(tmp_path):
    server, key = _orchestrator(tmp_path / "data", {})
    try:
        headers = {"Authorization": f"Bearer {key}", **FROM_ELSEWHERE}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            error_of(client.get("/tasks"), 403, "FORBIDDEN")
        assert _ips(server) == {"127.0.0.1"}  # the audit keeps the real peer
    finally:
        server.stop()


def test_a_configured_proxy_is_believed(tmp_path):
    server, key = _orchestrator(
        tmp_path / "data", {"PROVISIONING_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32"]'}
    )
    try:
        headers = {"Authorization": f"Bearer {key}", **FROM_ELSEWHERE}
        with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
            assert client.get("/tasks").status_code == 200
    finally:
        server.stop()


def test_rotating_forwarded_addresses_does_not_escape_the_login_rate_limit(tmp_path):
    process = ControlCenterProcess(tmp_path / "data").start()  # 5 attempts a minute
    try:
        fresh_window()
        with process.client() as client:
            for attempt in range(5):
                wrong = client.post(
                    "/auth/login",
                    json={"username": "admin", "password": "Not-The-Password-1"},
                    headers={"X-Forwarded-For": f"10.0.0.{attempt}"},
                )
                error_of(wrong, 401, "UNAUTHORIZED")
            sixth = client.post(
                "/auth/login",
                json={"username": "admin", "password": "Not-The-Password-1"},
                headers={"X-Forwarded-For": "10.0.0.99"},
            )
            error_of(sixth, 429, "RATE_LIMITED")
        table = AuditRecord.__table__
        logins = fetch(process.database, select(table).where(table.c.action == "auth.login"))
        assert {row["ip"] for row in logins} == {"127.0.0.1"}
    finally:
        process.stop()
