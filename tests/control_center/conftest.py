"""Fixtures for the control center: a real process, and an administrator who went
through the first-start path (one-time password, TOTP enrollment, password change)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from control_center.audit import verify_chain
from control_center.secret_keys import keys_for
from control_center.store.models import AuditRecord
from control_center.store.records import AuditFields
from orchestrator.settings import Settings
from tests.backend import fetch
from tests.control_center.servers import ADMIN_PASSWORD, ControlCenterProcess
from tests.pg import run_async

#: Generous budgets: the suite runs many logins from one address. The rate-limit tests
#: start their own process with the seed's budgets.
GENEROUS = {
    "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
    "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "10000",
}
ADMIN_NEW_PASSWORD = "Changed-Root-Password-7"


@dataclass
class Admin:
    token: str
    totp_secret: str
    backup_codes: list[str]
    password: str
    user_id: str
    spent_codes: list[str] = field(default_factory=list)

    def backup_code(self) -> str:
        code = next(c for c in self.backup_codes if c not in self.spent_codes)
        self.spent_codes.append(code)
        return code


def error_of(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["code"] == code, body
    return str(body["error"])


def data_of(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is True
    return body["data"]


def login(
    client: httpx.Client, username: str, password: str, mfa_code: str | None = None
) -> httpx.Response:
    body = {"username": username, "password": password}
    if mfa_code is not None:
        body["mfa_code"] = mfa_code
    return client.post("/auth/login", json=body)


def next_totp(secret: str) -> str:
    """The code of the next 30-second step: valid now, and newer than any spent so far."""
    import time

    return pyotp.TOTP(secret).at(time.time() + 30)


def bootstrap_admin(center: ControlCenterProcess) -> Admin:
    with center.client() as client:
        first = data_of(login(client, "admin", ADMIN_PASSWORD))
    assert set(first["user"]["roles"]) == {"admin"}
    assert first["restrictions"] == ["MFA_REQUIRED", "PASSWORD_CHANGE_REQUIRED"]
    with center.client(first["token"]) as admin:
        error_of(admin.get("/users"), 403, "MFA_REQUIRED")
        enrolled = data_of(admin.post("/auth/mfa/enroll"))
        secret = enrolled["secret"]
        assert enrolled["otpauth_uri"].startswith("otpauth://totp/")
        verified = data_of(admin.post("/auth/mfa/verify", json={"code": pyotp.TOTP(secret).now()}))
        assert len(verified["backup_codes"]) == 10
        error_of(admin.get("/users"), 403, "PASSWORD_CHANGE_REQUIRED")
        changed = admin.put(
            "/user/password",
            json={
                "current_password": ADMIN_PASSWORD,
                "new_password": ADMIN_NEW_PASSWORD,
                "confirm_new_password": ADMIN_NEW_PASSWORD,
            },
        )
        assert data_of(changed) == "Password updated successfully"
        data_of(admin.get("/users"))
    return Admin(
        first["token"], secret, verified["backup_codes"], ADMIN_NEW_PASSWORD, first["user"]["id"]
    )


def create_user(
    admin: httpx.Client, roles: list[str], password: str | None = None
) -> dict[str, Any]:
    """A new user with these roles; the returned record carries its `password`."""
    name = f"user-{secrets.token_hex(4)}"
    password = password or f"Pw-{secrets.token_urlsafe(12)}-9"
    body = {"username": name, "email": f"{name}@example.com", "password": password, "roles": roles}
    user = data_of(admin.post("/users", json=body), 201)
    return {**user, "password": password}


def token_of(center: ControlCenterProcess, user: dict[str, Any]) -> str:
    with center.client() as client:
        return str(data_of(login(client, user["username"], user["password"]))["token"])


def audit_rows(database: str, **where: str) -> list[dict[str, Any]]:
    """Audit records straight from the database at this URL, oldest first (`details`
    as an object)."""
    table = AuditRecord.__table__
    query = select(table).where(*(table.c[column] == value for column, value in where.items()))
    return fetch(database, query.order_by(table.c.seq))


def audit_fields(row: Mapping[str, Any]) -> AuditFields:
    """What a record's hash covers (`audit.canonical_json`), from a row read or forged
    by a test."""
    return AuditFields(**{field.name: row[field.name] for field in fields(AuditFields)})


def audit_key(center: ControlCenterProcess) -> bytes:
    """The audit chain's key, from the secrets key the process made in its data dir."""
    return keys_for(Settings(data_dir=str(center.data_dir)), create=False).audit


def chain_break(center: ControlCenterProcess) -> str | None:
    """The first record of the center's audit chain at fault, or None when it holds."""

    async def run() -> str | None:
        engine = create_async_engine(center.database)
        try:
            return (await verify_chain(engine, audit_key(center))).broken_at
        finally:
            await engine.dispose()

    return run_async(run)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCenterProcess]:
    process = ControlCenterProcess(tmp_path_factory.mktemp("control-center"), env=GENEROUS)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(center: ControlCenterProcess) -> Admin:
    return bootstrap_admin(center)


@pytest.fixture
def admin_client(center: ControlCenterProcess, admin: Admin) -> Iterator[httpx.Client]:
    with center.client(admin.token) as client:
        yield client
