"""One's own profile (`/user/profile`): what a user may change alone, and what needs an
administrator or the current password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.control_center.conftest import (
    bootstrap_admin,
    create_user,
    data_of,
    error_of,
    login,
    token_of,
)
from tests.control_center.servers import ControlCenterProcess

TRUSTED_NAME = "ci-bot"


def test_a_viewer_cannot_rename_into_a_username_a_policy_trusts(center, admin_client):
    trusting = {
        "name": "ci-bot-creates-users",
        "rules": [
            {
                "effect": "Allow",
                "resource": "users:*",
                "action": ["create"],
                "condition": f"user.username == '{TRUSTED_NAME}'",
            }
        ],
    }
    policy = data_of(admin_client.post("/policies", json=trusting), 201)
    try:
        viewer = create_user(admin_client, ["viewer"])
        escalation = {
            "username": "viewer-made-admin",
            "email": "viewer-made-admin@example.com",
            "password": "Escalated-Pass-123",
            "roles": ["admin"],
        }
        with center.client(token_of(center, viewer)) as own:
            renamed = own.put("/user/profile", json={"username": TRUSTED_NAME})
            message = error_of(renamed, 403, "FORBIDDEN")
            assert "administrator" in message and f"PUT /users/{viewer['id']}" in message
            # Nor through the administrators' endpoint: the policies check it.
            error_of(
                own.put(f"/users/{viewer['id']}", json={"username": TRUSTED_NAME}), 403, "FORBIDDEN"
            )
            error_of(own.post("/users", json=escalation), 403, "FORBIDDEN")
            assert data_of(own.get("/user/profile"))["username"] == viewer["username"]
            # Sending one's own name back unchanged (a read-modify-write client) is fine.
            same = own.put("/user/profile", json={"username": viewer["username"]})
            assert data_of(same)["username"] == viewer["username"]
        # An administrator renames, and the policy then trusts the user, as it says.
        data_of(admin_client.put(f"/users/{viewer['id']}", json={"username": TRUSTED_NAME}))
        with center.client(token_of(center, {**viewer, "username": TRUSTED_NAME})) as trusted:
            data_of(trusted.post("/users", json={**escalation, "roles": ["viewer"]}), 201)
    finally:
        data_of(admin_client.delete(f"/policies/{policy['id']}"))


def test_changing_ones_email_needs_the_current_password(center, admin_client):
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        bare = own.put("/user/profile", json={"email": "taken-over@example.com"})
        assert "current_password" in error_of(bare, 422, "INVALID_INPUT")
        wrong = own.put(
            "/user/profile",
            json={"email": "taken-over@example.com", "current_password": "Not-My-Password-1"},
        )
        assert "current_password" in error_of(wrong, 403, "FORBIDDEN")  # a refused proof
        assert data_of(own.get("/user/profile"))["email"] == user["email"]
        changed = own.put(
            "/user/profile",
            json={"email": "moved@example.com", "current_password": user["password"]},
        )
        assert data_of(changed)["email"] == "moved@example.com"
    with center.client() as client:
        data_of(login(client, "moved@example.com", user["password"]))


STINGY_BUDGET = 3


@pytest.fixture(scope="module")
def stingy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCenterProcess]:
    """A control center allowing 3 authentication attempts a minute (the suite's other
    centers allow thousands); the test below logs in twice."""
    process = ControlCenterProcess(
        tmp_path_factory.mktemp("stingy"),
        env={
            "PROVISIONING_AUTH__RATE_LIMIT_AUTH": str(STINGY_BUDGET),
            "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "10000",
        },
    ).start()
    yield process
    process.stop()


def test_email_change_attempts_share_the_password_change_budget(stingy):
    admin = bootstrap_admin(stingy)
    with stingy.client(admin.token) as admin_client:
        user = create_user(admin_client, ["viewer"])
    guesses = [
        ("/user/profile", {"email": "stolen@example.com", "current_password": "Guess-Pass-001"}),
        ("/user/password", {"current_password": "Guess-Pass-002", "new_password": "New-Pass-0003"}),
    ]
    window, spent = None, 0
    with stingy.client(token_of(stingy, user)) as own:
        for attempt in range(4 * STINGY_BUDGET):
            path, body = guesses[attempt % 2]
            answer = own.put(path, json=body)
            # The budget is per minute: count again from where a new minute started.
            if answer.headers["X-RateLimit-Reset"] != window:
                window, spent = answer.headers["X-RateLimit-Reset"], 0
            spent += 1
            if spent <= STINGY_BUDGET:
                error_of(answer, 403, "FORBIDDEN")  # a wrong password, a refused proof
                continue
            assert error_of(answer, 429, "RATE_LIMITED").startswith("too many requests")
            break
        else:
            raise AssertionError("the guesses were never limited")
