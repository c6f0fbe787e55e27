"""One base URL: the orchestrator answers the control center's account endpoints
(`/auth/login`, `/refresh`, `/logout`, `/mfa/*`, under `/`, `/api/v1` and `/v1`) with
the control center's own app, over the same database. Real processes: a control center
and an orchestrator on one data directory, as deployed side by side."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import httpx
import pyotp
import pytest

from tests.api.accounts import Pair, login_at, new_user
from tests.control_center.conftest import audit_rows, data_of, error_of
from tests.control_center.servers import JWT_SECRET, ControlCenterProcess
from tests.servers import OrchestratorProcess

PREFIXES = ("", "/api/v1", "/v1")
GENEROUS = {
    "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
    "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
    "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "10000",
    "PROVISIONING_AUTH__REGISTRATION_ENABLED": "true",
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    data_dir = tmp_path_factory.mktemp("one-base-url")
    center = ControlCenterProcess(data_dir, env=GENEROUS).start()
    try:
        orchestrator = OrchestratorProcess(data_dir, env=GENEROUS).start()
        try:
            yield Pair(center, orchestrator)
        finally:
            orchestrator.stop()
    finally:
        center.stop()


def _client(pair: Pair, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=pair.orchestrator.url, timeout=30, headers=headers)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_login_refresh_and_logout_at_the_orchestrator(pair: Pair, prefix: str) -> None:
    user = new_user(pair, ["operator"])
    with _client(pair) as anonymous:
        session = data_of(login_at(anonymous, user["username"], user["password"], prefix=prefix))
        assert session["access_token"] == session["token"]
        assert session["user"]["username"] == user["username"]
        assert session["restrictions"] == []
    with _client(pair, session["token"]) as client:
        assert data_of(client.get(f"{prefix if prefix == '/api/v1' else ''}/tasks")) == []
    # the control center accepts the orchestrator's session: one set of tables
    with pair.center.client(session["token"]) as at_center:
        assert data_of(at_center.get("/user/profile"))["username"] == user["username"]
    with _client(pair) as anonymous:
        body = {"refresh_token": session["refresh_token"]}
        renewed = data_of(anonymous.post(f"{prefix}/auth/refresh", json=body))
        assert renewed["token"] != session["token"]
        assert renewed["access_token"] == renewed["token"]
    with _client(pair, renewed["token"]) as client:
        assert data_of(client.post(f"{prefix}/auth/logout")) == "Successfully logged out"
        error_of(client.get("/tasks"), 401, "UNAUTHORIZED")
    with _client(pair) as anonymous:
        body = {"refresh_token": renewed["refresh_token"]}
        error_of(anonymous.post(f"{prefix}/auth/refresh", json=body), 401, "UNAUTHORIZED")


def test_mfa_enrollment_at_the_orchestrator(pair: Pair) -> None:
    user = new_user(pair, ["operator"])
    with _client(pair) as anonymous:
        token = data_of(login_at(anonymous, user["username"], user["password"]))["token"]
    with _client(pair, token) as client:
        enrolled = data_of(client.post("/api/v1/auth/mfa/enroll"))
        secret = enrolled["secret"]
        verified = client.post("/v1/auth/mfa/verify", json={"code": pyotp.TOTP(secret).now()})
        assert len(data_of(verified)["backup_codes"]) == 10
    with _client(pair) as anonymous:
        error_of(login_at(anonymous, user["username"], user["password"]), 401, "UNAUTHORIZED")
        code = pyotp.TOTP(secret).at(time.time() + 30)
        data_of(login_at(anonymous, user["username"], user["password"], code))
    # and the control center sees the same enrollment
    with pair.center.client() as at_center:
        error_of(login_at(at_center, user["username"], user["password"]), 401, "UNAUTHORIZED")


def test_anonymous_logout_and_mfa_are_refused_with_the_envelope(pair: Pair) -> None:
    with _client(pair) as anonymous:
        error_of(anonymous.post("/auth/logout"), 401, "UNAUTHORIZED")
        error_of(anonymous.post("/v1/auth/mfa/enroll"), 401, "UNAUTHORIZED")
        error_of(anonymous.post("/auth/login", content=b"{"), 400, "INVALID_INPUT")
        response = anonymous.post("/auth/login", json={"username": "x", "password": 5})
        assert response.status_code in (400, 422) and response.json()["success"] is False
        error_of(anonymous.post("/auth/nowhere", json={}), 404, "NOT_FOUND")
        forgot = anonymous.post("/api/v1/auth/forgot-password", json={"email": "n@example.com"})
        assert data_of(forgot).startswith("If an account with that email exists")
        error_of(anonymous.post("/auth/refresh", json={"token": ""}), 422, "INVALID_INPUT")


def test_a_login_is_audited_once_and_never_replayed(pair: Pair) -> None:
    user = new_user(pair, ["viewer"])
    headers = {"Idempotency-Key": "same-key-for-both"}
    body = {"username": user["username"], "password": user["password"]}
    with _client(pair) as anonymous:
        first = anonymous.post("/auth/login", json=body, headers=headers)
        second = anonymous.post("/auth/login", json=body, headers=headers)
    assert "idempotent-replayed" not in second.headers
    assert data_of(first)["token"] != data_of(second)["token"]
    rows = audit_rows(pair.orchestrator.database, action="auth.login", user_id=user["id"])
    assert [row["result"] for row in rows] == ["success", "success"]
    assert all(data_of(first)["token"] not in str(row["details"]) for row in rows)


def test_the_login_rate_limit_headers_come_from_the_account_app(pair: Pair) -> None:
    with _client(pair) as anonymous:
        response = login_at(anonymous, "nobody-at-all", "wrong-password-123")
    error_of(response, 401, "UNAUTHORIZED")
    assert response.headers["x-ratelimit-limit"] == "10000"


def test_the_account_clients_flow_at_one_url(pair: Pair) -> None:
    """Register, log in by email, make API keys and page through them, reach the
    profile and the deployments: all at the orchestrator's `/v1`."""
    name = f"signup-{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(10)}-7"
    signup = {
        "username": name,
        "email": f"{name}@example.com",
        "password": password,
        "confirm_password": password,
    }
    with _client(pair) as anonymous:
        registered = data_of(anonymous.post("/v1/auth/register", json=signup), 201)
        assert registered["user"]["roles"] == ["member"]
        body = {"email": signup["email"], "password": password}
        session = data_of(anonymous.post("/v1/auth/login", json=body))
    with _client(pair, session["access_token"]) as client:
        keys = [
            data_of(client.post("/v1/api-keys", json={"name": f"k{i}", "description": "ci"}), 201)
            for i in range(3)
        ]
        assert all(key["key"].startswith("prov_live_") for key in keys)
        pages = [client.get("/v1/api-keys", params={"page": p, "limit": 1}) for p in (1, 2, 3, 4)]
        listed = [[key["id"] for key in data_of(page)] for page in pages]
        assert sorted(i for ids in listed for i in ids) == sorted(key["id"] for key in keys)
        assert listed[3] == [] and all(len(ids) == 1 for ids in listed[:3])
        assert pages[0].headers["x-total-count"] == "3"
        assert "page=2" in pages[0].headers["link"]
        both = client.get("/v1/api-keys", params={"page": 2, "offset": 2, "limit": 1})
        assert [key["id"] for key in data_of(both)] == listed[1]  # the page wins
        assert client.get("/v1/api-keys", params={"page": 0}).status_code in (400, 422)
        assert data_of(client.get("/v1/user/profile"))["username"] == name
    with _client(pair, keys[0]["key"]) as by_key:
        # the key gets through (without a container engine here: 503, not 401)
        deployments = by_key.get("/v1/deployments")
        assert deployments.status_code in (200, 503), deployments.text
        revoked = by_key.delete(f"/v1/api-keys/{keys[1]['id']}")
        assert data_of(revoked) == "API key revoked successfully"
    # the same paging at the control center's own /v1
    with pair.center.client(session["token"]) as at_center:
        page = at_center.get("/v1/api-keys", params={"page": 2, "limit": 1})
        assert len(data_of(page)) == 1
        assert data_of(page)[0]["id"] != data_of(at_center.get("/v1/api-keys?limit=1"))[0]["id"]
