"""The web console's fixtures: a control center and an orchestrator on one database
(the console logs in through the control center's public API), and users with known
passwords: an operator, a viewer, and an operator who enrolled TOTP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.control_center.servers import JWT_SECRET, ControlCenterProcess
from tests.servers import OrchestratorProcess

GENEROUS = {
    "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
    "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "100000",
    "PROVISIONING_AUTH__RATE_LIMIT_BATCH": "100000",
}
PASSWORD = "Console-Password-2024"
CSRF = re.compile(r'name="csrf-token" content="([0-9a-f]+)"')


@dataclass
class Account:
    username: str
    password: str
    roles: list[str]
    totp_secret: str | None = None


@dataclass
class Console:
    center: ControlCenterProcess
    server: OrchestratorProcess
    accounts: dict[str, Account]

    @property
    def url(self) -> str:
        return self.server.url

    def browser(self) -> httpx.Client:
        """A client that keeps cookies, as a browser does, and follows no redirect."""
        return httpx.Client(base_url=self.url, timeout=30, headers={"Accept": "text/html"})

    @contextmanager
    def login(self, username: str) -> Iterator[httpx.Client]:
        """A browser signed in as `username` (an account without TOTP)."""
        account = self.accounts[username]
        with self.browser() as http:
            form = {"username": username, "password": account.password}
            response = http.post("/ui/login", data=form)
            assert response.status_code == 303, response.text
            yield http

    def token(self, username: str) -> str:
        """A session token from the control center's API (what the CLI would use)."""
        account = self.accounts[username]
        body: dict[str, str] = {"username": username, "password": account.password}
        if account.totp_secret:
            body["mfa_code"] = next_totp(account.totp_secret)
        with self.center.client() as http:
            answer = http.post("/auth/login", json=body)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["data"]["token"])

    def api(self, username: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token(username)}"},
        )


def next_totp(secret: str, offset: int = 30) -> str:
    import time

    return pyotp.TOTP(secret).at(time.time() + offset)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def make_user(env: Mapping[str, str], username: str, roles: list[str]) -> None:
    asyncio.run(_make_user(env, username, roles))


async def _make_user(env: Mapping[str, str], username: str, roles: list[str]) -> None:
    from control_center.passwords import hash_password_async
    from control_center.policy_set import seed_default_policies
    from control_center.store.records import NewUser
    from control_center.store.users import create_user
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine, upgrade

    settings = load_settings(
        environ={k: v for k, v in env.items() if k.startswith("PROVISIONING_")}
    )
    engine = create_engine(settings)
    try:
        await upgrade(engine)
        await seed_default_policies(engine)
        await create_user(
            engine,
            NewUser(
                username=username,
                email=f"{username}@example.com",
                password_hash=await hash_password_async(PASSWORD),
                roles=tuple(roles),
            ),
        )
    finally:
        await engine.dispose()


def enroll_totp(center: ControlCenterProcess, username: str) -> str:
    with center.client() as http:
        token = http.post("/auth/login", json={"username": username, "password": PASSWORD})
        headers = {"Authorization": f"Bearer {token.json()['data']['token']}"}
        secret = http.post("/auth/mfa/enroll", headers=headers).json()["data"]["secret"]
        verified = http.post(
            "/auth/mfa/verify", headers=headers, json={"code": pyotp.TOTP(secret).now()}
        )
        assert verified.status_code == 200, verified.text
    return str(secret)


def start_console(data_dir: Path, env: Mapping[str, str] | None = None) -> Console:
    center = ControlCenterProcess(data_dir, env=GENEROUS).start()
    try:
        server = OrchestratorProcess(
            data_dir,
            env={
                **GENEROUS,
                "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
                "PROVISIONING_CONTROL_CENTER__PORT": str(center.port),
                **(env or {}),
            },
        ).start()
    except BaseException:
        center.stop()
        raise
    accounts = {
        "ops": Account("ops", PASSWORD, ["operator"]),
        "watcher": Account("watcher", PASSWORD, ["viewer"]),
        "secure": Account("secure", PASSWORD, ["operator"]),
        "member": Account("member", PASSWORD, ["member"]),
    }
    for account in accounts.values():
        make_user(server.env, account.username, account.roles)
    accounts["secure"].totp_secret = enroll_totp(center, "secure")
    return Console(center, server, accounts)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    started = start_console(tmp_path_factory.mktemp("console"))
    yield started
    started.server.stop()
    started.center.stop()
