"""Seed 003's rate limits on a process with the default authentication budget
(5 per minute per address) and a small general one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.control_center.conftest import audit_rows, data_of, error_of, login
from tests.control_center.servers import ADMIN_PASSWORD, ControlCenterProcess

GENERAL = 8


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCenterProcess]:
    process = ControlCenterProcess(
        tmp_path_factory.mktemp("strict"),
        env={
            "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": str(GENERAL),
            "PROVISIONING_AUTH__MFA_REQUIRED_ROLES": "[]",
        },
    ).start()
    yield process
    process.stop()


def fresh_window(seconds_needed: float = 15.0) -> None:
    """Wait for a new minute if this one ends too soon for the test to fit in it."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.2)


@pytest.fixture(scope="module")
def admin_session(strict) -> dict:
    """The administrator's first login: the first of the address's 5 attempts this minute."""
    fresh_window()
    with strict.client() as client:
        response = login(client, "admin", ADMIN_PASSWORD)
    assert response.headers["X-RateLimit-Limit"] == "5"
    assert response.headers["X-RateLimit-Remaining"] == "4"
    reset = int(response.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 60
    return data_of(response)


def test_the_sixth_login_attempt_within_a_minute_gets_429(strict, admin_session):
    with strict.client() as client:
        for remaining in (3, 2, 1, 0):
            wrong = login(client, "admin", "Not-The-Password-1")
            error_of(wrong, 401, "UNAUTHORIZED")
            assert wrong.headers["X-RateLimit-Remaining"] == str(remaining)
        sixth = login(client, "admin", ADMIN_PASSWORD)
        assert error_of(sixth, 429, "RATE_LIMITED").startswith("too many requests")
        assert sixth.headers["X-RateLimit-Remaining"] == "0"
        # Refreshing shares the budget of the address.
        error_of(client.post("/auth/refresh", json={"token": "whatever"}), 429, "RATE_LIMITED")
    refused = audit_rows(strict.database, action="auth.login", result="denied")
    assert refused[-1]["details"]["code"] == "RATE_LIMITED"


def test_a_user_gets_429_past_the_general_budget(strict, admin_session):
    fresh_window(5)
    with strict.client(admin_session["token"]) as client:
        for _ in range(GENERAL):
            answer = client.get("/user/profile")
            # The one-time password still blocks the profile, but each request counts.
            error_of(answer, 403, "PASSWORD_CHANGE_REQUIRED")
            assert answer.headers["X-RateLimit-Limit"] == str(GENERAL)
        limited = client.get("/user/profile")
        error_of(limited, 429, "RATE_LIMITED")
        assert limited.headers["X-RateLimit-Remaining"] == "0"
    user_id = admin_session["user"]["id"]
    refused = audit_rows(strict.database, result="denied", user_id=user_id)
    assert refused[-1]["details"]["code"] == "RATE_LIMITED"
