"""Users, profile, policies, API keys and audit logs through the HTTP API (seeds 003, 002)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.control_center.conftest import (
    Admin,
    create_user,
    data_of,
    error_of,
    login,
    token_of,
)


def test_health_needs_no_credentials(center):
    with center.client() as client:
        assert client.get("/health").json() == {
            "success": True,
            "data": "Control center is healthy",
        }


def test_an_unserved_api_version_gets_406(center, admin_client):
    v1 = admin_client.get("/users", headers={"Accept": "application/vnd.provisioning.v1+json"})
    data_of(v1)
    v2 = admin_client.get("/users", headers={"Accept": "application/vnd.provisioning.v2+json"})
    error_of(v2, 406, "NOT_ACCEPTABLE")


def test_login_answers_with_the_seed_shape_and_accepts_an_email(center, admin_client):
    user = create_user(admin_client, ["operator", "viewer"])
    with center.client() as client:
        session = data_of(
            client.post("/auth/login", json={"email": user["email"], "password": user["password"]})
        )
    assert {"token", "expires_at", "refresh_token", "user"} <= session.keys()
    assert session["user"] == {
        "id": user["id"],
        "username": user["username"],
        "email": user["email"],
        "roles": ["operator", "viewer"],
    }
    assert session["restrictions"] == []
    assert session["expires_at"].endswith("Z")


def test_creating_users_checks_uniqueness_and_password_strength(admin_client):
    user = create_user(admin_client, ["viewer"])
    body = {
        "username": user["username"].upper(),
        "email": "other@example.com",
        "password": "Good-Pass-1234",
    }
    assert "username" in error_of(admin_client.post("/users", json=body), 409, "CONFLICT")
    body = {
        "username": "someone-else",
        "email": user["email"].upper(),
        "password": "Good-Pass-1234",
    }
    assert "email" in error_of(admin_client.post("/users", json=body), 409, "CONFLICT")
    for weak, why in (("Sh0rt-pw", "at least 12"), ("onlylowercaseletters", "two kinds")):
        body = {"username": "weak-user", "email": "weak@example.com", "password": weak}
        assert why in error_of(admin_client.post("/users", json=body), 422, "INVALID_INPUT")
    body = {"username": "bad name!", "email": "x@example.com", "password": "Good-Pass-1234"}
    error_of(admin_client.post("/users", json=body), 422, "INVALID_INPUT")


def test_users_are_listed_with_filters_and_paging(admin_client):
    for _ in range(3):
        create_user(admin_client, ["auditor"])
    disabled = create_user(admin_client, ["auditor"])
    data_of(admin_client.put(f"/users/{disabled['id']}", json={"enabled": False}))
    page = admin_client.get("/users", params={"role": "auditor", "limit": 2})
    assert len(data_of(page)) == 2
    assert page.headers["X-Total-Count"] == "4"
    assert 'rel="next"' in page.headers["Link"]
    listed = data_of(admin_client.get("/users", params={"role": "auditor", "enabled": "false"}))
    assert [u["id"] for u in listed] == [disabled["id"]]
    assert not {"password", "password_hash", "mfa_secret"} & listed[0].keys()


def test_updating_and_deleting_a_user(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    answer = admin_client.put(
        f"/users/{user['id']}", json={"roles": ["operator"], "email": "new@example.com"}
    )
    assert data_of(answer) == "User updated successfully"
    shown = data_of(admin_client.get(f"/users/{user['id']}"))
    assert (shown["roles"], shown["email"]) == (["operator"], "new@example.com")
    assert data_of(admin_client.delete(f"/users/{user['id']}")) == "User deleted successfully"
    error_of(admin_client.get(f"/users/{user['id']}"), 404, "NOT_FOUND")
    with center.client() as client:
        error_of(login(client, user["username"], user["password"]), 401, "UNAUTHORIZED")


def test_an_admin_keeps_their_own_account_and_the_last_admin_stays(admin_client, admin: Admin):
    assert "own account" in error_of(
        admin_client.delete(f"/users/{admin.user_id}"), 409, "CONFLICT"
    )
    demote = admin_client.put(f"/users/{admin.user_id}", json={"roles": ["viewer"]})
    assert "last enabled administrator" in error_of(demote, 409, "CONFLICT")


def test_an_admin_reset_forces_a_password_change(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    reset = {"password": "Temporary-Pass-55", "must_change_password": True}
    data_of(admin_client.put(f"/users/{user['id']}", json=reset))
    with center.client() as client:
        session = data_of(login(client, user["username"], "Temporary-Pass-55"))
    assert session["restrictions"] == ["PASSWORD_CHANGE_REQUIRED"]
    with center.client(session["token"]) as own:
        error_of(own.get("/user/profile"), 403, "PASSWORD_CHANGE_REQUIRED")
        change = {"current_password": "Temporary-Pass-55", "new_password": "Chosen-Pass-5566"}
        data_of(own.put("/user/password", json=change))
        assert data_of(own.get("/user/profile"))["must_change_password"] is False


def test_profile_and_password_of_ones_own_account(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    other = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        profile = data_of(own.get("/user/profile"))
        assert (profile["id"], profile["is_active"]) == (user["id"], True)
        moved = {"email": "renamed@example.com", "current_password": user["password"]}
        assert data_of(own.put("/user/profile", json=moved))["email"] == "renamed@example.com"
        taken = {"email": other["email"], "current_password": user["password"]}
        error_of(own.put("/user/profile", json=taken), 409, "CONFLICT")
        wrong = {"current_password": "Not-My-Password-1", "new_password": "Another-Pass-123"}
        assert "current_password" in error_of(
            own.put("/user/password", json=wrong), 403, "FORBIDDEN"
        )
        mismatch = {
            "current_password": user["password"],
            "new_password": "Another-Pass-123",
            "confirm_new_password": "Another-Pass-124",
        }
        error_of(own.put("/user/password", json=mismatch), 422, "INVALID_INPUT")
        good = {"current_password": user["password"], "new_password": "Another-Pass-123"}
        assert data_of(own.put("/user/password", json=good)) == "Password updated successfully"
    with center.client() as client:
        data_of(login(client, user["username"], "Another-Pass-123"))


def test_policies_are_listed_created_updated_and_deleted(admin_client):
    names = [p["name"] for p in data_of(admin_client.get("/policies"))]
    assert names[:6] == [
        "admin_access_policy",
        "operator_access_policy",
        "viewer_access_policy",
        "member_access_policy",
        "self_service_policy",
        "api_key_privacy_policy",
    ]
    body = {
        "name": "new_policy",
        "version": "1.0.0",
        "rules": [
            {
                "effect": "Allow",
                "resource": "servers:*",
                "action": ["create", "read"],
                "condition": "user.role == 'admin'",
            }
        ],
    }
    created = data_of(admin_client.post("/policies", json=body), 201)
    assert (created["name"], created["version"]) == ("new_policy", "1.0.0")
    error_of(admin_client.post("/policies", json=body), 409, "CONFLICT")
    updated = admin_client.put(
        f"/policies/{created['id']}", json={"version": "1.1.0", "enabled": False}
    )
    assert data_of(updated) == "Policy updated successfully"
    shown = data_of(admin_client.get(f"/policies/{created['id']}"))
    assert (shown["version"], shown["enabled"]) == ("1.1.0", False)
    data_of(admin_client.delete(f"/policies/{created['id']}"))
    error_of(admin_client.get(f"/policies/{created['id']}"), 404, "NOT_FOUND")


def test_an_invalid_condition_is_refused_naming_the_rule(admin_client):
    body = {
        "name": "broken",
        "rules": [
            {"effect": "Allow", "resource": "*", "action": ["read"]},
            {
                "effect": "Allow",
                "resource": "*",
                "action": ["read"],
                "condition": "__import__('os')",
            },
        ],
    }
    message = error_of(admin_client.post("/policies", json=body), 422, "INVALID_INPUT")
    assert message.startswith("rules[1].condition: a function call is not allowed")
    policy_id = data_of(admin_client.get("/policies"))[0]["id"]
    bad = {"rules": [{"effect": "Allow", "resource": "*", "condition": "user.secret == 1"}]}
    message = error_of(admin_client.put(f"/policies/{policy_id}", json=bad), 422, "INVALID_INPUT")
    assert message.startswith("rules[0].condition: unknown name 'user.secret'")


def test_api_keys_expire(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        error_of(
            own.post("/api-keys", json={"name": "old", "expires_at": past}), 422, "INVALID_INPUT"
        )
        created = data_of(own.post("/api-keys", json={"name": "month", "expires_in_days": 30}), 201)
        assert created["expires_at"] is not None
        listed = data_of(own.get("/api-keys"))
        assert "key" not in listed[0]
        assert listed[0]["key_prefix"] == created["key"][:12]


def test_audit_logs_are_filtered_and_paged(center, admin_client, admin: Admin):
    user = create_user(admin_client, ["viewer"])
    data_of(admin_client.put(f"/users/{user['id']}", json={"email": "audited@example.com"}))
    start = (datetime.now(UTC) - timedelta(minutes=5)).isoformat().replace("+00:00", "Z")
    records = data_of(
        admin_client.get(
            "/audit/logs",
            params={
                "user_id": admin.user_id,
                "action": "users.update",
                "resource": f"users:{user['id']}",
                "from": start,
            },
        )
    )
    assert len(records) == 1
    record = records[0]
    assert record["result"] == "success"
    assert record["details"]["changed"] == ["email"]
    assert {
        "id",
        "timestamp",
        "user_id",
        "action",
        "resource",
        "result",
        "details",
        "ip",
    } <= record.keys()
    page = admin_client.get("/audit/logs", params={"resource": "users:*", "limit": 1, "offset": 1})
    assert len(data_of(page)) == 1
    assert int(page.headers["X-Total-Count"]) > 2
    assert page.headers["X-Offset"] == "1"
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert data_of(admin_client.get("/audit/logs", params={"from": future})) == []


def test_a_login_is_audited(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client() as client:
        data_of(login(client, user["username"], user["password"]))
    records = data_of(
        admin_client.get("/audit/logs", params={"user_id": user["id"], "action": "auth.login"})
    )
    assert [r["result"] for r in records] == ["success"]
    assert records[0]["ip"] == "127.0.0.1"


def test_an_api_key_expires_within_the_bound_of_expires_in_days(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        forever = own.post(
            "/api-keys", json={"name": "forever", "expires_at": "9999-12-31T00:00:00Z"}
        )
        message = error_of(forever, 422, "INVALID_INPUT")
        assert message.startswith("expires_at:") and "3650 days" in message
        past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
        assert error_of(
            own.post("/api-keys", json={"name": "past", "expires_at": past}), 422, "INVALID_INPUT"
        ).startswith("expires_at:")
        longest = (datetime.now(UTC) + timedelta(days=3649)).isoformat()
        data_of(own.post("/api-keys", json={"name": "long", "expires_at": longest}), 201)
        assert [k["name"] for k in data_of(own.get("/api-keys"))] == ["long"]


def test_the_api_docs_are_served_from_the_package(center):
    with httpx.Client(base_url=center.url, timeout=30) as anonymous:
        page = anonymous.get("/schema/swagger")
        assert page.status_code == 200
        assert "/schema/assets/swagger-ui-bundle.js" in page.text and "cdn" not in page.text
        assert anonymous.get("/schema/assets/swagger-ui-bundle.js").status_code == 200
        document = anonymous.get("/schema/openapi.json").json()
    assert "bearer" in document["components"]["securitySchemes"]
