"""The control center refuses what it must, through real HTTP against a real process,
and every refusal leaves an audit record in an intact hash chain."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import jwt
import pyotp
import pytest
from sqlalchemy import update

from control_center.store.models import AuditRecord
from tests.backend import execute
from tests.control_center.conftest import (
    Admin,
    audit_rows,
    chain_break,
    create_user,
    data_of,
    error_of,
    login,
    next_totp,
    token_of,
)
from tests.control_center.servers import JWT_SECRET, ControlCenterProcess

ISSUER = "provisioning-control-center"
INVALID_LOGIN = "invalid username, password or MFA code"


def claims_for(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": user_id,
        "roles": ["admin"],
        "iat": now,
        "exp": now + 600,
        "jti": str(uuid.uuid4()),
        "iss": ISSUER,
        "typ": "access",
    }
    return {**claims, **overrides}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def audited(center: ControlCenterProcess, path: str, status: int) -> dict[str, Any]:
    """The newest audit record of a request to `path` answered with `status`."""
    for row in reversed(audit_rows(center.database)):
        details = row["details"]
        if details.get("path") == path and details.get("status") == status:
            return row
    raise AssertionError(f"no audit record for {path} with status {status}")


NEW_USER = {"username": "mallory", "email": "m@example.com", "password": "Mallory-Pass-123"}


def test_a_token_with_alg_none_is_refused(center, admin: Admin):
    forged = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(admin.user_id))}."
    with center.client(forged) as client:
        error_of(client.post("/users", json=NEW_USER), 401, "UNAUTHORIZED")
        error_of(client.get("/users"), 401, "UNAUTHORIZED")
    record = audited(center, "/users", 401)
    assert record["result"] == "denied"
    assert record["details"]["code"] == "UNAUTHORIZED"


def test_a_token_signed_with_another_key_is_refused(center, admin: Admin):
    forged = jwt.encode(claims_for(admin.user_id), "another-key-" + "x" * 40, algorithm="HS256")
    with center.client(forged) as client:
        message = error_of(
            client.post("/policies", json={"name": "p", "rules": []}), 401, "UNAUTHORIZED"
        )
    assert "invalid" in message
    assert audited(center, "/policies", 401)["result"] == "denied"


def test_a_token_with_another_algorithm_is_refused(center, admin: Admin):
    forged = jwt.encode(claims_for(admin.user_id), JWT_SECRET, algorithm="HS512")
    with center.client(forged) as client:
        error_of(client.get("/users"), 401, "UNAUTHORIZED")


def test_an_expired_token_is_refused(center, admin: Admin):
    past = int(time.time()) - 3600
    expired = jwt.encode(
        claims_for(admin.user_id, iat=past - 60, exp=past), JWT_SECRET, algorithm="HS256"
    )
    with center.client(expired) as client:
        message = error_of(client.delete(f"/users/{admin.user_id}"), 401, "UNAUTHORIZED")
    assert "expired" in message
    assert audited(center, f"/users/{admin.user_id}", 401)["result"] == "denied"


def test_a_token_is_refused_after_logout(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    token = token_of(center, user)
    with center.client(token) as client:
        data_of(client.get("/user/profile"))
        assert data_of(client.post("/auth/logout")) == "Successfully logged out"
        message = error_of(client.post("/auth/logout"), 401, "UNAUTHORIZED")
        assert "revoked" in message
        error_of(client.get("/user/profile"), 401, "UNAUTHORIZED")
    record = audited(center, "/auth/logout", 401)
    assert record["result"] == "denied"


def test_logout_also_revokes_the_refresh_token(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        session = data_of(login(client, user["username"], user["password"]))
        with center.client(session["token"]) as own:
            data_of(own.post("/auth/logout"))
        refused = client.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})
        error_of(refused, 401, "UNAUTHORIZED")


def test_a_reused_refresh_token_is_refused_and_revokes_its_family(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        first = data_of(login(client, user["username"], user["password"]))
        # Seed 003 sends the refresh token as `token`.
        second = data_of(client.post("/auth/refresh", json={"token": first["refresh_token"]}))
        assert second["refresh_token"] != first["refresh_token"]
        with center.client(second["token"]) as fresh:
            data_of(fresh.get("/user/profile"))
        reused = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert "already used" in error_of(reused, 401, "UNAUTHORIZED")
        # The whole family is gone: the newer refresh token and its access token too.
        newer = client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
        error_of(newer, 401, "UNAUTHORIZED")
    with center.client(second["token"]) as fresh:
        error_of(fresh.get("/user/profile"), 401, "UNAUTHORIZED")
    record = audited(center, "/auth/refresh", 401)
    assert record["action"] == "auth.refresh"
    assert record["user_id"] == user["id"]


def test_a_totp_code_is_accepted_once_and_a_backup_code_once(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        secret = data_of(own.post("/auth/mfa/enroll"))["secret"]
        codes = data_of(own.post("/auth/mfa/verify", json={"code": pyotp.TOTP(secret).now()}))
    backup = codes["backup_codes"][0]
    with center.client() as client:
        assert error_of(login(client, user["username"], user["password"]), 401, "UNAUTHORIZED") == (
            INVALID_LOGIN
        )
        wrong = login(client, user["username"], user["password"], "000000")
        assert error_of(wrong, 401, "UNAUTHORIZED") == INVALID_LOGIN
        assert error_of(login(client, user["username"], "Wrong-Pass-123"), 401, "UNAUTHORIZED") == (
            INVALID_LOGIN
        )
        code = next_totp(secret)
        data_of(login(client, user["username"], user["password"], code))
        replay = login(client, user["username"], user["password"], code)
        assert error_of(replay, 401, "UNAUTHORIZED") == INVALID_LOGIN
        data_of(login(client, user["username"], user["password"], backup))
        again = login(client, user["username"], user["password"], backup)
        assert error_of(again, 401, "UNAUTHORIZED") == INVALID_LOGIN
    refusals = [
        r["details"]
        for r in audit_rows(center.database, action="auth.login", result="denied")
        if r["details"].get("username") == user["username"]
    ]
    assert [r["reason"] for r in refusals] == [
        "missing, wrong or replayed MFA code",
        "missing, wrong or replayed MFA code",
        "wrong password",
        "missing, wrong or replayed MFA code",
        "missing, wrong or replayed MFA code",
    ]


def test_an_operator_can_neither_create_an_admin_nor_change_a_policy(center, admin_client):
    operator = create_user(admin_client, ["operator"])
    policy_id = data_of(admin_client.get("/policies"))[0]["id"]
    with center.client(token_of(center, operator)) as client:
        data_of(client.get("/users"))  # operators read everything
        body = {"username": "sneaky", "email": "s@example.com", "password": "Sneaky-Pass-123"}
        message = error_of(
            client.post("/users", json={**body, "roles": ["admin"]}), 403, "FORBIDDEN"
        )
        assert "'create' on 'users:*'" in message
        raised = client.put(f"/users/{operator['id']}", json={"roles": ["admin"]})
        error_of(raised, 403, "FORBIDDEN")
        changed = client.put(f"/policies/{policy_id}", json={"enabled": False})
        error_of(changed, 403, "FORBIDDEN")
    for path in ("/users", f"/users/{operator['id']}", f"/policies/{policy_id}"):
        record = audited(center, path, 403)
        assert record["result"] == "denied"
        assert record["user_id"] == operator["id"]
        assert record["details"]["reason"] == "no policy allows it"
    assert audited(center, f"/policies/{policy_id}", 403)["action"] == "policies.update"


def test_a_deny_rule_overrides_an_allow_at_once(center, admin_client):
    viewer = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, viewer)) as client:
        data_of(client.get("/users"))
        deny = {
            "name": f"no-user-list-{viewer['username']}",
            "rules": [
                {
                    "effect": "Deny",
                    "resource": "users:*",
                    "action": ["list"],
                    "condition": f"user.id == '{viewer['id']}'",
                }
            ],
        }
        created = data_of(admin_client.post("/policies", json=deny), 201)
        message = error_of(client.get("/users"), 403, "FORBIDDEN")
        assert f"denied by policy '{deny['name']}' rule 0" in message
        data_of(admin_client.delete(f"/policies/{created['id']}"))
        data_of(client.get("/users"))
    assert audited(center, "/users", 403)["user_id"] == viewer["id"]


def test_a_revoked_api_key_is_refused(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        created = data_of(own.post("/api-keys", json={"name": "ci"}), 201)
        key = created["key"]
        assert key.startswith("prov_live_")
        assert created["key_prefix"] == key[:12]
    with center.client(key) as by_key:
        assert data_of(by_key.get("/user/profile"))["id"] == user["id"]
        data_of(by_key.get("/users"))  # the owner's viewer role reads
        error_of(by_key.post("/users", json=NEW_USER), 403, "FORBIDDEN")  # and only reads
        listed = data_of(by_key.get("/api-keys"))
        assert [k["key_prefix"] for k in listed] == [key[:12]]
        assert listed[0]["last_used"] is not None
        data_of(by_key.delete(f"/api-keys/{created['id']}"))
        error_of(by_key.post("/api-keys", json={"name": "again"}), 401, "UNAUTHORIZED")
    assert "revoked" in audited(center, "/api-keys", 401)["details"]["error"]


def test_nobody_but_an_admin_touches_another_users_api_keys(center, admin_client):
    owner, operator = create_user(admin_client, ["viewer"]), create_user(admin_client, ["operator"])
    with center.client(token_of(center, owner)) as own:
        key_id = data_of(own.post("/api-keys", json={"name": "mine"}), 201)["id"]
    with center.client(token_of(center, operator)) as other:
        error_of(other.delete(f"/api-keys/{key_id}"), 403, "FORBIDDEN")
        error_of(other.get("/api-keys", params={"user_id": owner["id"]}), 403, "FORBIDDEN")
    assert (
        "api_key_privacy_policy" in audited(center, f"/api-keys/{key_id}", 403)["details"]["reason"]
    )
    listed = data_of(admin_client.get("/api-keys", params={"user_id": owner["id"]}))
    assert [k["id"] for k in listed] == [key_id]


def test_a_disabled_user_is_refused_at_once(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as client:
        data_of(client.get("/user/profile"))
        data_of(admin_client.put(f"/users/{user['id']}", json={"enabled": False}))
        error_of(client.get("/user/profile"), 401, "UNAUTHORIZED")
        error_of(login(client, user["username"], user["password"]), 401, "UNAUTHORIZED")


def test_the_audit_chain_holds_and_names_an_edited_record(center, admin: Admin):
    assert chain_break(center) is None
    rows = audit_rows(center.database)
    assert len(rows) > 20
    victim = rows[len(rows) // 2]
    edit = update(AuditRecord).where(AuditRecord.id == victim["id"])
    execute(center.database, edit.values(details={"edited": True}))
    try:
        assert chain_break(center) == victim["id"]
    finally:
        execute(center.database, edit.values(details=victim["details"]))
    assert chain_break(center) is None


@pytest.mark.parametrize(
    "header",
    ["", "Bearer", "Basic YWRtaW46YWRtaW4=", "Bearer not.a.jwt", "Bearer prov_live_unknown"],
)
def test_malformed_credentials_are_refused(center, header):
    with center.client() as client:
        response = client.post("/api-keys", json={"name": "x"}, headers={"Authorization": header})
    error_of(response, 401, "UNAUTHORIZED")
