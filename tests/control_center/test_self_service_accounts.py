"""Accounts people open and recover themselves: `POST /auth/register`,
`/auth/forgot-password` and `/auth/reset-password`, against a real control center and a
real SMTP server (aiosmtpd) on loopback that the tests read the emails from."""

from __future__ import annotations

import email
import email.policy
import queue
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from control_center.store.models import User as UserRow
from control_center.tokens import issue_reset_token
from orchestrator.settings import AuthSettings
from tests.backend import fetch
from tests.control_center.conftest import (
    GENEROUS,
    audit_rows,
    chain_break,
    data_of,
    error_of,
    login,
)
from tests.control_center.servers import JWT_SECRET, ControlCenterProcess
from tests.servers import free_port

FORGOT_ANSWER = "If an account with that email exists, a password reset link has been sent."
#: The token as the email shows it (no `auth.reset_url`: the API call).
TOKEN_IN_MAIL = re.compile(r'"token": "([A-Za-z0-9_\-.]+)"')


class Inbox:
    """An aiosmtpd handler: every message it accepts, in a queue; `hold` keeps the
    server from answering DATA until released (a slow mail server)."""

    def __init__(self) -> None:
        self.messages: queue.Queue[EmailMessage] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        self.arrived.set()
        while not self.hold.is_set():
            await asyncio.sleep(0.01)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.put(message)
        return "250 Message accepted for delivery"

    def next(self, timeout: float = 60.0) -> EmailMessage:
        return self.messages.get(timeout=timeout)


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def _mail_env(port: int) -> dict[str, str]:
    return {
        **GENEROUS,
        "PROVISIONING_AUTH__REGISTRATION_ENABLED": "true",
        # An installation open to strangers, as its operator would harden it: only
        # refresh tokens renew a session.
        "PROVISIONING_AUTH__REFRESH_WITH_ACCESS_TOKEN": "false",
        "PROVISIONING_SMTP__HOST": "127.0.0.1",
        "PROVISIONING_SMTP__PORT": str(port),
        "PROVISIONING_SMTP__SECURITY": "none",
        "PROVISIONING_SMTP__SENDER": "provisioning <noreply@example.com>",
        # Longer than the clients' 30 s: an answer that waited for a held email would
        # time out the test instead of passing.
        "PROVISIONING_SMTP__TIMEOUT": "120",
    }


@pytest.fixture(scope="module")
def open_center(
    tmp_path_factory: pytest.TempPathFactory, inbox: tuple[Inbox, int]
) -> Iterator[ControlCenterProcess]:
    process = ControlCenterProcess(tmp_path_factory.mktemp("open-center"), env=_mail_env(inbox[1]))
    process.start()
    yield process
    process.stop()


def _register(client: httpx.Client, **override: str) -> httpx.Response:
    name = f"new-{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}-9"
    body = {
        "username": name,
        "email": f"{name}@example.com",
        "password": password,
        "confirm_password": password,
        **override,
    }
    return client.post("/auth/register", json=body)


def _new_account(center: ControlCenterProcess) -> dict[str, Any]:
    password = f"Pw-{secrets.token_urlsafe(12)}-9"
    with center.client() as client:
        response = _register(client, password=password, confirm_password=password)
    session = data_of(response, 201)
    return {**session, "password": password}


def _token_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    found = TOKEN_IN_MAIL.search(body.get_content())
    assert found, body.get_content()
    return found.group(1)


def test_registration_opens_an_account_with_only_the_configured_role(open_center):
    account = _new_account(open_center)
    assert account["user"]["roles"] == ["member"]
    assert account["access_token"] == account["token"]
    assert account["refresh_token"]
    with open_center.client() as client:
        again = data_of(login(client, account["user"]["username"], account["password"]))
    with open_center.client(again["token"]) as client:
        assert data_of(client.get("/user/profile"))["email"] == account["user"]["email"]
        # A member reads nobody else's account, nor the audit trail, and changes nothing
        # but its own (the default policies).
        error_of(client.get("/users"), 403, "FORBIDDEN")
        error_of(client.get(f"/users/{account['user']['id']}"), 403, "FORBIDDEN")
        error_of(client.get("/audit/logs"), 403, "FORBIDDEN")
        body = {"username": "by-viewer", "email": "v@example.com", "password": "Pw-12345-abcde"}
        error_of(client.post("/users", json=body), 403, "FORBIDDEN")
        promote = client.put(f"/users/{account['user']['id']}", json={"roles": ["admin"]})
        error_of(promote, 403, "FORBIDDEN")
    rows = audit_rows(open_center.database, action="auth.register")
    assert any(row["user_id"] == account["user"]["id"] for row in rows)
    assert all(account["password"] not in str(row["details"]) for row in rows)


def test_an_installation_can_turn_off_renewal_with_an_access_token(open_center):
    account = _new_account(open_center)
    with open_center.client() as client:
        refused = client.post("/auth/refresh", json={"token": account["token"]})
        assert "auth.refresh_with_access_token" in error_of(refused, 401, "UNAUTHORIZED")
        # The session is untouched, and its refresh token still renews it.
        renewed = data_of(client.post("/auth/refresh", json={"token": account["refresh_token"]}))
    with open_center.client(renewed["token"]) as client:
        data_of(client.get("/user/profile"))
    ways = [
        (row["result"], row["details"].get("with"))
        for row in audit_rows(open_center.database, action="auth.refresh")
        if row["user_id"] == account["user"]["id"] or row["result"] != "success"
    ]
    assert ("denied", "access_token") in ways
    assert ("success", "refresh_token") in ways


def test_registration_refuses_bad_input_with_clear_4xx(open_center):
    account = _new_account(open_center)
    taken_name, taken_email = account["user"]["username"], account["user"]["email"]
    with open_center.client() as client:
        message = error_of(
            _register(client, confirm_password="Something-Else-42"), 422, "INVALID_INPUT"
        )
        assert "confirm_password" in message
        weak = _register(client, password="short", confirm_password="short")
        assert "password" in error_of(weak, 422, "INVALID_INPUT")
        error_of(_register(client, username=taken_name.upper()), 409, "CONFLICT")
        error_of(_register(client, email=taken_email), 409, "CONFLICT")
        for body in (
            {},
            {"username": "x"},
            {"username": "ok-name", "email": "not-an-email", "password": "Pw-long-enough-1"},
            {"username": "ok-name", "email": "a@example.com", "password": 5},
            {"username": "ok-name", "email": "a@example.com", "password": "Pw-long-1", "x": 1},
        ):
            response = client.post("/auth/register", json=body)
            assert 400 <= response.status_code < 500, response.text
            assert response.json()["success"] is False
        assert client.post("/auth/register", content=b"[").status_code in (400, 422)


def test_forgot_password_emails_a_single_use_token_that_ends_every_session(open_center, inbox):
    handler, _ = inbox
    account = _new_account(open_center)
    with open_center.client() as client:
        answer = client.post("/auth/forgot-password", json={"email": account["user"]["email"]})
    assert data_of(answer) == FORGOT_ANSWER
    message = handler.next()
    assert message["To"] == account["user"]["email"]
    assert "noreply@example.com" in message["From"]
    token = _token_of(message)

    new_password = "Brand-New-Password-77"
    with open_center.client() as client:
        reset = client.post(
            "/auth/reset-password", json={"token": token, "new_password": new_password}
        )
        assert data_of(reset) == "Password reset successfully"
        # spent: a second use is refused, with a message that says so
        again = client.post(
            "/auth/reset-password", json={"token": token, "new_password": "Another-Pass-88"}
        )
        assert "already used" in error_of(again, 401, "UNAUTHORIZED")
        error_of(
            login(client, account["user"]["username"], account["password"]), 401, "UNAUTHORIZED"
        )
        data_of(login(client, account["user"]["username"], new_password))
    # the sessions opened before the reset are over
    with open_center.client(account["token"]) as old:
        error_of(old.get("/user/profile"), 401, "UNAUTHORIZED")
    # audited, without the token; nor is it in the log
    user_id = account["user"]["id"]
    forgot = audit_rows(open_center.database, action="auth.forgot_password", user_id=user_id)
    assert forgot and forgot[-1]["details"]["email"] == "queued"
    reset_rows = audit_rows(open_center.database, action="auth.reset_password", user_id=user_id)
    assert [row["result"] for row in reset_rows] == ["success", "denied"]
    everything = audit_rows(open_center.database)
    assert all(token not in str(row["details"]) for row in everything)
    assert token not in open_center.log()
    assert chain_break(open_center) is None


def test_the_answer_is_the_same_bytes_for_an_unknown_address_and_does_not_wait_for_mail(
    open_center, inbox
):
    handler, _ = inbox
    account = _new_account(open_center)
    handler.hold.clear()  # the mail server takes the message but does not answer yet
    handler.arrived.clear()
    try:
        with open_center.client() as client:
            known = client.post("/auth/forgot-password", json={"email": account["user"]["email"]})
            unknown = client.post(
                "/auth/forgot-password",
                json={"email": f"nobody-{secrets.token_hex(4)}@example.com"},
            )
            by_name = client.post(
                "/auth/forgot-password", json={"email": account["user"]["username"]}
            )
        # the known address was answered while its email was still held by the server
        assert not handler.hold.is_set()
    finally:
        handler.hold.set()
    assert known.status_code == unknown.status_code == by_name.status_code == 200
    assert known.content == unknown.content == by_name.content
    assert {k for k in known.headers if not k.startswith("x-ratelimit")} == {
        k for k in unknown.headers if not k.startswith("x-ratelimit")
    }
    assert handler.arrived.wait(60)
    assert handler.next()["To"] == account["user"]["email"]
    assert handler.messages.empty(), "an email went to an address without an account"


def test_expired_malformed_and_foreign_reset_tokens_are_refused(open_center):
    account = _new_account(open_center)
    user_id = account["user"]["id"]
    table = UserRow.__table__
    password_hash = fetch(
        open_center.database, select(table.c.password_hash).where(table.c.id == user_id)
    )[0]["password_hash"]
    auth = AuthSettings(jwt_secret=JWT_SECRET, reset_token_ttl=60)
    expired = issue_reset_token(
        auth, JWT_SECRET, user_id, password_hash, datetime.now(UTC) - timedelta(hours=2)
    ).token
    other_key = issue_reset_token(auth, "k" * 64, user_id, password_hash).token
    with open_center.client() as client:

        def refused(token: Any, password: Any = "Valid-New-Pass-42") -> str:
            response = client.post(
                "/auth/reset-password", json={"token": token, "new_password": password}
            )
            assert 400 <= response.status_code < 500, response.text
            assert response.json()["success"] is False
            return str(response.json()["error"])

        assert "expired" in refused(expired)
        assert "not a valid" in refused(other_key)
        assert "not a valid" in refused(account["token"])  # an access token is no reset token
        assert "not a valid" in refused("a.b.c")
        assert "not a valid" in refused("nonsense")
        refused("")
        refused(5)
        refused("x" * 5000)
        # a good token with a weak password: refused, and not spent
        good = issue_reset_token(auth, JWT_SECRET, user_id, password_hash).token
        assert "new_password" in refused(good, "weak")
        reset = client.post(
            "/auth/reset-password", json={"token": good, "new_password": "Valid-New-Pass-42"}
        )
        assert data_of(reset) == "Password reset successfully"


def test_without_smtp_forgot_password_logs_and_sends_nothing(center, admin, inbox):
    handler, _ = inbox
    with center.client() as client:
        error_of(_register(client), 403, "REGISTRATION_DISABLED")
        unknown = f"nobody-{secrets.token_hex(4)}@example.com"
        answer = client.post("/auth/forgot-password", json={"email": unknown})
        with center.client(admin.token) as own:
            profile_email = data_of(own.get("/user/profile"))["email"]
        known = client.post("/auth/forgot-password", json={"email": profile_email})
    assert answer.content == known.content
    assert data_of(known) == FORGOT_ANSWER
    assert "no SMTP server is configured" in center.log()
    assert handler.messages.empty()


def test_a_registration_storm_hits_the_rate_limit(tmp_path, inbox):
    env = {**_mail_env(inbox[1]), "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "3"}
    process = ControlCenterProcess(tmp_path / "storm", env=env).start()
    try:
        with process.client() as client:
            answers = [_register(client) for _ in range(5)]
    finally:
        process.stop()
    assert [a.status_code for a in answers[:3]] == [201, 201, 201]
    error_of(answers[3], 429, "RATE_LIMITED")
    assert answers[4].status_code == 429


def test_a_username_spelled_as_someones_email_cannot_take_their_reset(open_center, inbox):
    handler, _ = inbox
    victim = _new_account(open_center)
    address = victim["user"]["email"]
    with open_center.client() as client:
        # The address is taken as a username too: login takes either.
        taken = _register(client, username=address, email=f"x{secrets.token_hex(3)}@example.com")
        assert "already taken" in error_of(taken, 409, "CONFLICT")
        # The reset goes to the account whose email it is.
        client.post("/auth/forgot-password", json={"email": address.upper()})
    assert handler.next()["To"] == address


def test_one_reset_email_per_account_per_interval_whatever_the_senders(open_center, inbox):
    """Many addresses asking for one person's reset cannot fill their inbox: the answer
    never changes, and one email goes out per `auth.reset_email_interval` (60 s here)."""
    handler, _ = inbox
    account = _new_account(open_center)
    address = account["user"]["email"]
    answers = []
    with open_center.client() as client:
        for _ in range(3):
            answers.append(client.post("/auth/forgot-password", json={"email": address}))
    assert len({answer.content for answer in answers}) == 1
    assert handler.next()["To"] == address
    user_id = account["user"]["id"]
    rows = audit_rows(open_center.database, action="auth.forgot_password", user_id=user_id)
    assert [row["details"]["email"] for row in rows] == [
        "queued",
        "not sent: one was sent less than 60 s ago",
        "not sent: one was sent less than 60 s ago",
    ]
    # Nothing else was sent for the account (the one email is already taken above).
    assert handler.messages.empty()
