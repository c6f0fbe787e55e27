"""`POST /auth/refresh {"token": "<current access token>"}`: the access token spends the
pair it was issued with, once; the next pair stays in the same session and never
outlives that session's refresh lifetime; a logged-out or forged token cannot refresh;
a refresh token keeps working as before."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import update

from control_center.store.models import RefreshToken
from tests.backend import execute
from tests.control_center.conftest import create_user, data_of, error_of, login
from tests.control_center.servers import JWT_SECRET


def _session(center, admin_client) -> dict:
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        return dict(data_of(login(client, user["username"], user["password"])))


def _refresh(center, token: str):
    with center.client() as client:
        return client.post("/auth/refresh", json={"token": token})


def test_an_access_token_refreshes_once_in_the_same_session(center, admin_client):
    first = _session(center, admin_client)
    renewed = data_of(_refresh(center, first["token"]))
    assert renewed["token"] != first["token"]
    assert renewed["access_token"] == renewed["token"]
    assert renewed["refresh_token"] != first["refresh_token"]
    with center.client(renewed["token"]) as client:
        data_of(client.get("/user/profile"))
    # once: a second use is a replay, and ends the session (as a reused refresh token)
    message = error_of(_refresh(center, first["token"]), 401, "UNAUTHORIZED")
    assert "already used" in message
    with center.client(renewed["token"]) as client:
        error_of(client.get("/user/profile"), 401, "UNAUTHORIZED")
    error_of(_refresh(center, renewed["refresh_token"]), 401, "UNAUTHORIZED")


def test_the_refreshed_pair_never_outlives_the_sessions_refresh_lifetime(center, admin_client):
    first = _session(center, admin_client)
    chain = [first]
    for _ in range(3):
        chain.append(data_of(_refresh(center, chain[-1]["token"])))
    ends = {pair["refresh_expires_at"] for pair in chain}
    assert ends == {first["refresh_expires_at"]}, "a refresh by access token extended it"
    for pair in chain:
        assert datetime.fromisoformat(pair["expires_at"]) <= datetime.fromisoformat(
            pair["refresh_expires_at"]
        )
    # a refresh token still starts a full lifetime, as before
    with center.client() as client:
        body = {"refresh_token": chain[-1]["refresh_token"]}
        slid = data_of(client.post("/auth/refresh", json=body))
    assert slid["refresh_expires_at"] >= first["refresh_expires_at"]


def test_an_access_token_of_a_session_past_its_lifetime_cannot_refresh(center, admin_client):
    first = _session(center, admin_client)
    past = datetime.now(UTC) - timedelta(seconds=1)
    execute(
        center.database,
        update(RefreshToken)
        .where(RefreshToken.user_id == first["user"]["id"])
        .values(expires_at=past),
    )
    message = error_of(_refresh(center, first["token"]), 401, "UNAUTHORIZED")
    assert "lifetime" in message


def test_a_logged_out_access_token_cannot_refresh(center, admin_client):
    first = _session(center, admin_client)
    with center.client(first["token"]) as client:
        data_of(client.post("/auth/logout"))
    error_of(_refresh(center, first["token"]), 401, "UNAUTHORIZED")


def test_forged_expired_and_malformed_tokens_cannot_refresh(center, admin_client):
    first = _session(center, admin_client)
    claims = jwt.decode(
        first["token"], JWT_SECRET, algorithms=["HS256"], options={"verify_iss": False}
    )
    now = int(time.time())
    expired = jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, JWT_SECRET, "HS256")
    unissued = jwt.encode({**claims, "jti": str(uuid.uuid4())}, JWT_SECRET, "HS256")
    forged = jwt.encode(claims, "another-key-" + "x" * 40, "HS256")
    for token in (expired, unissued, forged, "a.b.c", "not-a-token"):
        response = _refresh(center, token)
        error_of(response, 401, "UNAUTHORIZED")
    for body in ({}, {"token": 5}, {"token": "x" * 5000}, {"token": "a\u0000b"}):
        with center.client() as client:
            response = client.post("/auth/refresh", json=body)
        assert 400 <= response.status_code < 500, response.text
        assert response.json()["success"] is False
    # the untouched session still refreshes
    data_of(_refresh(center, first["token"]))
