"""An access token is good only while the session that issued it lives: a token whose
`jti` no session issued is refused even when its signature is right, and ending a
session (logout, a reused refresh token, a password change) ends its access tokens at
the next request."""

from __future__ import annotations

import time
import uuid

import jwt

from tests.control_center.conftest import Admin, create_user, data_of, error_of, login
from tests.control_center.servers import JWT_SECRET


def test_a_token_signed_with_the_key_but_issued_by_no_session_is_refused(center, admin: Admin):
    now = int(time.time())
    minted = {
        "sub": admin.user_id,
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),  # any id: no login issued it
        "iss": "provisioning-control-center",
        "typ": "access",
    }
    token = jwt.encode(minted, JWT_SECRET, algorithm="HS256")
    with center.client(token) as client:
        message = error_of(client.get("/users"), 401, "UNAUTHORIZED")
    assert "session" in message


def test_a_token_is_refused_for_another_user_than_its_session(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        session = data_of(login(client, user["username"], user["password"]))
    claims = jwt.decode(
        session["token"],
        JWT_SECRET,
        algorithms=["HS256"],
        issuer=None,
        options={"verify_iss": False},
    )
    other = create_user(admin_client, ["viewer"])
    forged = jwt.encode({**claims, "sub": other["id"]}, JWT_SECRET, algorithm="HS256")
    with center.client(forged) as client:
        error_of(client.get("/user/profile"), 401, "UNAUTHORIZED")


def test_changing_ones_password_ends_the_other_sessions_at_once(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        this = data_of(login(client, user["username"], user["password"]))
        other = data_of(login(client, user["username"], user["password"]))
    with center.client(other["token"]) as stolen:
        data_of(stolen.get("/user/profile"))
    change = {"current_password": user["password"], "new_password": "Rotated-Pass-4321"}
    with center.client(this["token"]) as own:
        data_of(own.put("/user/password", json=change))
        # The session that made the change goes on.
        data_of(own.get("/user/profile"))
    with center.client(other["token"]) as stolen:
        error_of(stolen.get("/user/profile"), 401, "UNAUTHORIZED")
    with center.client() as client:
        stale = client.post("/auth/refresh", json={"refresh_token": other["refresh_token"]})
        error_of(stale, 401, "UNAUTHORIZED")
        renewed = client.post("/auth/refresh", json={"refresh_token": this["refresh_token"]})
        with center.client(data_of(renewed)["token"]) as own:
            data_of(own.get("/user/profile"))


def test_an_administrators_password_reset_ends_every_session_of_the_user(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        session = data_of(login(client, user["username"], user["password"]))
    reset = {"password": "Reset-By-Admin-77", "must_change_password": True}
    data_of(admin_client.put(f"/users/{user['id']}", json=reset))
    with center.client(session["token"]) as own:
        error_of(own.get("/user/profile"), 401, "UNAUTHORIZED")
    data_of(admin_client.get("/users"))  # the administrator's own session is untouched
