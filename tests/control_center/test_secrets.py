"""No response, log line or audit record shows a password, a password hash, a TOTP
secret (after enrollment), an API key (after creation), the JWT key or the secrets key."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.backend import fetch
from tests.control_center.conftest import (
    GENEROUS,
    bootstrap_admin,
    create_user,
    data_of,
    error_of,
    login,
    next_totp,
)
from tests.control_center.servers import ADMIN_PASSWORD, ControlCenterProcess


class Transcript:
    """Every response seen, except those allowed to show one secret once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def hook(self, response: httpx.Response) -> None:
        response.read()
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.texts.append(f"{response.request.url}\n{headers}\n{response.text}")

    def client(self, center: ControlCenterProcess, token: str | None = None) -> httpx.Client:
        client = center.client(token)
        client.event_hooks["response"] = [self.hook]
        return client


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCenterProcess]:
    process = ControlCenterProcess(
        tmp_path_factory.mktemp("secrets"),
        # The key file rather than a configured key; the most talkative log level.
        env={
            **GENEROUS,
            "PROVISIONING_AUTH__JWT_SECRET": "",
            "PROVISIONING_SERVER__LOG_LEVEL": "debug",
        },
    ).start()
    yield process
    process.stop()


def test_no_secret_leaks_into_responses_logs_or_audit(center):
    seen = Transcript()
    admin = bootstrap_admin(center)  # its responses are the ones that show secrets once
    weak, wrong = "aaaaaaaaaaaaaaaa", "Wrong-Guess-Pass-5"
    with seen.client(center, admin.token) as admin_client:
        user = create_user(admin_client, ["operator"])
        error_of(
            admin_client.post(
                "/users",
                json={"username": "weakling", "email": "w@example.com", "password": weak},
            ),
            422,
            "INVALID_INPUT",
        )
        data_of(admin_client.get("/users"))
        data_of(admin_client.get(f"/users/{user['id']}"))
    with seen.client(center) as anonymous:
        session = data_of(login(anonymous, user["username"], user["password"]))
        error_of(login(anonymous, user["username"], wrong), 401, "UNAUTHORIZED")
    with center.client(session["token"]) as once:  # responses that show a secret once
        totp_secret = data_of(once.post("/auth/mfa/enroll"))["secret"]
        verified = data_of(
            once.post("/auth/mfa/verify", json={"code": pyotp.TOTP(totp_secret).now()})
        )
        api_key = data_of(once.post("/api-keys", json={"name": "deploy"}), 201)["key"]
    new_password = "Brand-New-Password-8"
    with seen.client(center, session["token"]) as own:
        data_of(own.get("/user/profile"))
        data_of(own.get("/api-keys"))
        data_of(own.get("/audit/logs"))
        error_of(own.post("/auth/mfa/enroll"), 409, "CONFLICT")
        changed = own.put(
            "/user/password",
            json={"current_password": user["password"], "new_password": new_password},
        )
        data_of(changed)
        error_of(
            own.put("/user/password", json={"current_password": wrong, "new_password": weak}),
            403,
            "FORBIDDEN",
        )
    with seen.client(center, api_key) as by_key:
        data_of(by_key.get("/user/profile"))
    with seen.client(center) as anonymous:
        again = data_of(login(anonymous, user["username"], new_password, next_totp(totp_secret)))
        data_of(anonymous.post("/auth/refresh", json={"refresh_token": again["refresh_token"]}))
    with seen.client(center, again["token"]) as own:
        data_of(own.post("/auth/logout"))
    center.stop()  # flush the log

    hashes = [row["password_hash"] for row in fetch(center.database, "SELECT * FROM users")]
    audit = "\n".join(
        repr(tuple(row.values())) for row in fetch(center.database, "SELECT * FROM audit_log")
    )
    key_file = Path(center.data_dir) / "jwt.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((Path(center.data_dir) / "secrets.key").stat().st_mode) == 0o600
    secrets = {
        "the first admin password": ADMIN_PASSWORD,
        "the admin's new password": admin.password,
        "a user's password": user["password"],
        "a user's new password": new_password,
        "a wrong password": wrong,
        "a weak password": weak,
        "the admin's TOTP secret": admin.totp_secret,
        "a user's TOTP secret": totp_secret,
        "an API key": api_key,
        "the JWT key": key_file.read_text().strip(),
        "the secrets key": (Path(center.data_dir) / "secrets.key").read_text().strip(),
        **{f"password hash {i}": h for i, h in enumerate(hashes)},
        **{f"backup code {i}": c for i, c in enumerate(verified["backup_codes"])},
        **{f"admin backup code {i}": c for i, c in enumerate(admin.backup_codes)},
    }
    places = {
        "the log": center.log(),
        "the audit log": audit,
        **{f"response {i}": text for i, text in enumerate(seen.texts)},
    }
    assert len(seen.texts) > 15
    # The log is JSON lines (not a terminal): the access line is one record's event.
    events = [json.loads(line)["event"] for line in center.log().splitlines() if line[:1] == "{"]
    assert any('"POST /auth/login HTTP/1.1" 401' in event for event in events)  # access lines
    assert "login refused" in events
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for where, text in places.items()
        if secret in text
    ]
    assert leaks == []
    for text in seen.texts:
        assert "password_hash" not in text
        assert "mfa_secret" not in text
