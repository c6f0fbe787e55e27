"""How the CLI words API errors (`orchestrator.cli.errors`)."""

from __future__ import annotations

from datetime import datetime

from orchestrator.cli.errors import message_of
from orchestrator.client import ApiError


def test_a_rate_limit_says_when_in_local_time_and_how_long():
    now = 1_796_282_600.0
    reset = 1_796_282_640
    error = ApiError(
        f"too many requests: at most 5 per minute; try again after {reset} (Unix time)",
        "RATE_LIMITED",
        429,
        {"limit": 5, "reset": reset},
    )
    local = datetime.fromtimestamp(reset).astimezone().strftime("%H:%M:%S")
    assert message_of(error, now=now) == (
        f"too many requests: at most 5 per minute; try again at {local} (in 40.0s) (RATE_LIMITED)"
    )
    assert "Unix" not in message_of(error, now=now)


def test_a_401_without_credentials_says_to_log_in_and_one_with_them_keeps_the_reason():
    anonymous = ApiError(
        "authentication required: send Authorization: Bearer <token>",
        "UNAUTHORIZED",
        401,
        anonymous=True,
    )
    assert message_of(anonymous).startswith("not logged in: run `provisioning login`")
    revoked = ApiError("the API key has been revoked", "UNAUTHORIZED", 401)
    assert message_of(revoked) == "the API key has been revoked (UNAUTHORIZED)"
