"""`/auth/register`, `/auth/forgot-password`, `/auth/reset-password`: accounts that
people open and recover themselves.

- Registration is off unless `auth.registration_enabled` (403 `REGISTRATION_DISABLED`);
  a new account gets `auth.registration_roles` (`member`) and a session, as a login.
- Forgot-password answers the same bytes whether or not the address has an account;
  when it has one, a signed single-use reset token (`tokens.issue_reset_token`) goes
  by email after the answer (`control_center.mail`), and the audit record says so,
  without the token; at most one email per account every `auth.reset_email_interval`
  seconds. With no `[smtp]` server, it is logged and nothing is sent.
- Reset-password spends the token (it is bound to the password it replaces), sets the
  new password and ends every session of the user.

All three count against the per-address authentication budget, as login does.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from litestar import Controller, Response, post
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED

from control_center import mail, sessions
from control_center.auth import restrictions_of
from control_center.errors import RegistrationDisabled, Unauthorized
from control_center.guard import key_for
from control_center.passwords import hash_password_async
from control_center.request_context import AnyRequest, audit_as, limit_auth_attempts, services
from control_center.schemas import ForgotIn, LoginOut, RegisterIn, ResetIn, UserBrief
from control_center.store import audit as audit_store
from control_center.store import users
from control_center.store.records import NewUser, User
from control_center.tokens import (
    NOT_A_RESET,
    decode_reset_token,
    issue_reset_token,
    password_binding,
)
from control_center.users import checked_password
from orchestrator.clock import utcnow
from orchestrator.errors import InvalidInput, NotFound
from orchestrator.http.envelope import Envelope
from orchestrator.settings import Settings
from orchestrator.store.engine import AsyncEngine

log = structlog.get_logger(__name__)

FORGOT_ANSWER = "If an account with that email exists, a password reset link has been sent."


async def _send_reset(settings: Settings, key: str, user: User) -> None:
    """Issue the token and email it (after the answer: see the module's notes)."""
    issued = issue_reset_token(settings.auth, key, user.id, user.password_hash)
    message = mail.reset_message(
        settings, user.email, user.username, issued.token, issued.expires_at
    )
    await mail.send(settings, message, user_id=user.id)


async def _sent_lately(engine: AsyncEngine, user: User, interval: float) -> bool:
    """Whether a reset email was queued for the user in the last `interval` seconds (the
    audit trail says so: every process sees it)."""
    if interval <= 0:
        return False
    since = utcnow() - timedelta(seconds=interval)
    recent, _ = await audit_store.list_audit(
        engine, user_id=user.id, action="auth.forgot_password", since=since, limit=20
    )
    return any(entry.details.get("email") == "queued" for entry in recent)


class AccountController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/register", status_code=HTTP_201_CREATED, summary="Open an account (when enabled)")
    async def register(
        self, request: AnyRequest, state: State, data: JSONBody[RegisterIn]
    ) -> Envelope[LoginOut]:
        audit_as(request, "auth.register", "users:*", username=data.username)
        limit_auth_attempts(request)
        service = services(state)
        settings = service.settings
        if not settings.auth.registration_enabled:
            raise RegistrationDisabled(
                "registration is disabled on this server; ask an administrator for an account"
            )
        if data.confirm_password is not None and data.confirm_password != data.password:
            raise InvalidInput("confirm_password: does not match password")
        checked_password(settings, data.password, data.username, "password")
        roles = tuple(dict.fromkeys(settings.auth.registration_roles))
        user = await users.create_user(
            service.db,
            NewUser(
                username=data.username,
                email=data.email,
                password_hash=await hash_password_async(data.password),
                roles=roles,
            ),
        )
        record = audit_as(request, "auth.register", f"users:{user.id}", roles=list(roles))
        record.user_id = user.id
        session = await sessions.start_session(
            service.db, settings.auth, key_for(settings), user.id, user.roles
        )
        return Envelope(
            LoginOut(
                token=session.access.token,
                expires_at=session.access.expires_at,
                refresh_token=session.refresh_token,
                refresh_expires_at=session.refresh_expires_at,
                user=UserBrief(user.id, user.username, user.email, list(user.roles)),
                restrictions=restrictions_of(settings.auth.mfa_required_roles, user),
            )
        )

    @post("/forgot-password", status_code=200, summary="Email a password-reset token")
    async def forgot_password(
        self, request: AnyRequest, state: State, data: JSONBody[ForgotIn]
    ) -> Response[Envelope[str]]:
        record = audit_as(request, "auth.forgot_password", "users:*")
        limit_auth_attempts(request)
        service = services(state)
        settings = service.settings
        # By email only (a username spelled as the address must not stand in for its
        # owner), of an enabled account.
        user = await users.find_by_email(service.db, data.email)
        if user is not None and not user.enabled:
            user = None
        background = None
        if user is None:
            record.details["account"] = "none"
        else:
            record.user_id = user.id
            record.resource = f"users:{user.id}"
            interval = settings.auth.reset_email_interval
            if mail.configured(settings) and await _sent_lately(service.db, user, interval):
                # Many addresses could otherwise fill one person's inbox: the answer is
                # the same, and the email already sent is still good.
                record.details["email"] = f"not sent: one was sent less than {interval:g} s ago"
            elif mail.configured(settings):
                record.details["email"] = "queued"
                background = BackgroundTask(_send_reset, settings, key_for(settings), user)
            else:
                record.details["email"] = "not sent: no SMTP server configured"
                log.warning(
                    "password reset asked, but no SMTP server is configured (smtp.host): "
                    "no email sent",
                    user_id=user.id,
                )
        return Response(Envelope(FORGOT_ANSWER), background=background)

    @post("/reset-password", status_code=200, summary="Set a new password with a reset token")
    async def reset_password(
        self, request: AnyRequest, state: State, data: JSONBody[ResetIn]
    ) -> Envelope[str]:
        record = audit_as(request, "auth.reset_password", "users:*")
        limit_auth_attempts(request)
        service = services(state)
        settings = service.settings
        user_id, binding = decode_reset_token(settings.auth, key_for(settings), data.token)
        record.user_id = user_id
        record.resource = f"users:{user_id}"
        try:
            user = await users.get_user(service.db, user_id)
        except NotFound:
            raise Unauthorized(NOT_A_RESET) from None
        if not user.enabled:
            raise Unauthorized(NOT_A_RESET)
        if password_binding(user.password_hash) != binding:
            raise Unauthorized(
                "token: this password-reset token was already used (or the password has "
                "changed since); ask for a new one (POST /auth/forgot-password)"
            )
        if data.confirm_password is not None and data.confirm_password != data.new_password:
            raise InvalidInput("confirm_password: does not match new_password")
        checked_password(settings, data.new_password, user.username, "new_password")
        new_hash = await hash_password_async(data.new_password)
        if not await users.replace_password(service.db, user.id, user.password_hash, new_hash):
            raise Unauthorized(
                "token: this password-reset token was already used; ask for a new one"
            )
        return Envelope("Password reset successfully")
