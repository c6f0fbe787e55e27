"""`/auth`: login, refresh, logout and TOTP enrollment (seeds 003 and 002).

A failed login says the same thing whichever factor was wrong; the audit record
keeps the reason for administrators.
"""

from __future__ import annotations

from typing import NoReturn

import structlog
from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody

from control_center import mfa, sessions
from control_center.errors import Forbidden, Unauthorized
from control_center.guard import MFA_PENDING, MUST_CHANGE_PASSWORD, key_for
from control_center.passwords import verify_password_async
from control_center.request_context import (
    AnyRequest,
    CurrentPrincipal,
    audit_as,
    client_ip,
    limit,
    limit_auth_attempts,
    note,
    services,
)
from control_center.schemas import (
    LoginIn,
    LoginOut,
    MfaCodeIn,
    MfaEnrollOut,
    MfaVerifyOut,
    RefreshBody,
    TokenOut,
    UserBrief,
)
from control_center.secret_keys import Keys, keys_for, open_totp_secret, seal_totp_secret
from control_center.store import users
from control_center.store.records import User
from control_center.tokens import digest
from orchestrator.errors import Conflict, InvalidInput
from orchestrator.http.envelope import Envelope
from orchestrator.store.engine import AsyncEngine

log = structlog.get_logger(__name__)
INVALID_LOGIN = "invalid username, password or MFA code"
SELF_SERVICE = {"tolerates": (MFA_PENDING, MUST_CHANGE_PASSWORD)}


def backup_code_digest(code: str) -> str:
    return digest(mfa.normalize_backup_code(code).replace("-", ""))


def totp_secret(keys: Keys, user: User) -> str | None:
    """The user's TOTP secret, opened; None without one, or when it cannot be opened
    (another secrets key: then only a backup code gets in)."""
    stored = user.mfa_secret
    if not stored:
        return None
    secret = open_totp_secret(keys, user.id, stored)
    if secret is None:
        log.warning("a TOTP secret does not open with this secrets key", user_id=user.id)
    return secret


async def spend_second_factor(
    engine: AsyncEngine, keys: Keys, user: User, code: str | None
) -> str | None:
    """Return "totp" or "backup" when `code` is a valid, unused second factor of `user`."""
    if not code or not user.mfa_secret:
        return None
    if mfa.looks_like_backup_code(code):
        spent = await users.spend_backup_code(engine, user.id, backup_code_digest(code))
        return "backup" if spent else None
    secret = totp_secret(keys, user)
    step = None if secret is None else mfa.matching_step(secret, code, user.mfa_last_step)
    if step is None or not await users.spend_totp_step(engine, user.id, step):
        return None
    return "totp"


def restrictions_of(settings_roles: list[str], user: User) -> list[str]:
    found = []
    if any(role in settings_roles for role in user.roles) and not user.mfa_enabled:
        found.append("MFA_REQUIRED")
    if user.must_change_password:
        found.append("PASSWORD_CHANGE_REQUIRED")
    return found


def _refuse(request: AnyRequest, reason: str) -> NoReturn:
    """Fail a login with the one message for every cause; the audit keeps the cause."""
    record = note(request)
    record.details["reason"] = reason
    log.info(
        "login refused",
        username=record.details.get("username"),
        ip=client_ip(request),
        reason=reason,
    )
    raise Unauthorized(INVALID_LOGIN)


class AuthController(Controller):
    path = "/auth"
    tags = ["auth"]

    @post("/login", status_code=200, summary="Log in with password (and TOTP when enrolled)")
    async def login(
        self, request: AnyRequest, state: State, data: JSONBody[LoginIn]
    ) -> Envelope[LoginOut]:
        name = (data.username or data.email or "").strip()
        record = audit_as(request, "auth.login", "auth:login", username=name[:254])
        limit_auth_attempts(request)
        service = services(state)
        user = await users.find_user(service.db, name) if name else None
        correct = await verify_password_async(data.password, user.password_hash if user else None)
        if user is None or not correct:
            _refuse(request, "unknown user" if user is None else "wrong password")
        record.user_id = user.id
        if not user.enabled:
            _refuse(request, "account disabled")
        if user.mfa_enabled:
            factor = await spend_second_factor(
                service.db, keys_for(service.settings), user, data.mfa_code
            )
            if factor is None:
                _refuse(request, "missing, wrong or replayed MFA code")
            record.details["mfa"] = factor
        await users.record_login(service.db, user.id)
        session = await sessions.start_session(
            service.db,
            service.settings.auth,
            key_for(service.settings),
            user.id,
            user.roles,
            mfa=user.mfa_enabled,  # (refused above unless its code was right)
        )
        return Envelope(
            LoginOut(
                token=session.access.token,
                expires_at=session.access.expires_at,
                refresh_token=session.refresh_token,
                refresh_expires_at=session.refresh_expires_at,
                user=UserBrief(user.id, user.username, user.email, list(user.roles)),
                restrictions=restrictions_of(service.settings.auth.mfa_required_roles, user),
            )
        )

    @post(
        "/refresh",
        status_code=200,
        summary="Trade a refresh token, or the current access token once, for a new pair",
    )
    async def refresh(
        self, request: AnyRequest, state: State, data: JSONBody[RefreshBody]
    ) -> Envelope[TokenOut]:
        record = audit_as(request, "auth.refresh", "auth:refresh")
        limit_auth_attempts(request)
        service = services(state)
        presented = data.refresh_token or data.token
        if not presented:
            raise InvalidInput(
                "refresh_token or token: required (a refresh token, or the current access token)"
            )
        with_access_token = sessions.looks_like_access_token(presented)
        record.details["with"] = "access_token" if with_access_token else "refresh_token"
        if with_access_token and not service.settings.auth.refresh_with_access_token:
            raise Unauthorized(
                "renewing with an access token is turned off here "
                "(auth.refresh_with_access_token): present the refresh token"
            )
        try:
            session = await sessions.rotate(
                service.db, service.settings.auth, key_for(service.settings), presented
            )
        except sessions.RefreshRefused as exc:
            record.user_id = exc.user_id
            if exc.reused:
                record.details["reason"] = "refresh token reused; session revoked"
            raise
        record.user_id = session.user_id
        return Envelope(
            TokenOut(
                token=session.access.token,
                expires_at=session.access.expires_at,
                refresh_token=session.refresh_token,
                refresh_expires_at=session.refresh_expires_at,
            )
        )

    @post("/logout", status_code=200, opt=SELF_SERVICE, summary="Revoke this session")
    async def logout(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal
    ) -> Envelope[str]:
        audit_as(request, "auth.logout", f"users:{principal.user_id}")
        if principal.via != "jwt":
            raise Forbidden(
                "logout ends a session token; revoke an API key with DELETE /api-keys/{id}"
            )
        await sessions.end_session(services(state).db, principal.credential_id)
        return Envelope("Successfully logged out")

    @post("/mfa/enroll", status_code=200, opt=SELF_SERVICE, summary="Start TOTP enrollment")
    async def mfa_enroll(
        self, request: AnyRequest, state: State, principal: CurrentPrincipal
    ) -> Envelope[MfaEnrollOut]:
        audit_as(request, "auth.mfa_enroll", f"users:{principal.user_id}")
        service = services(state)
        user = await users.get_user(service.db, principal.user_id)
        if user.mfa_enabled:
            raise Conflict("MFA is already enabled; disable it first to enroll a new device")
        secret = mfa.new_secret()
        sealed = seal_totp_secret(keys_for(service.settings), principal.user_id, secret)
        await users.set_pending_mfa_secret(service.db, principal.user_id, sealed)
        return Envelope(MfaEnrollOut(secret, mfa.provisioning_uri(secret, user.username)))

    @post("/mfa/verify", status_code=200, opt=SELF_SERVICE, summary="Activate TOTP")
    async def mfa_verify(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[MfaCodeIn],
    ) -> Envelope[MfaVerifyOut]:
        audit_as(request, "auth.mfa_verify", f"users:{principal.user_id}")
        service = services(state)
        limit(request, f"mfa:{principal.user_id}", service.settings.auth.rate_limit_auth)
        user = await users.get_user(service.db, principal.user_id)
        if user.mfa_enabled:
            raise Conflict("MFA is already enabled")
        if not user.mfa_secret:
            raise Conflict("no enrollment in progress: POST /auth/mfa/enroll first")
        secret = totp_secret(keys_for(service.settings), user)
        step = None if secret is None else mfa.matching_step(secret, data.code, user.mfa_last_step)
        if step is None or not await users.spend_totp_step(service.db, user.id, step):
            raise Forbidden("code: not a valid code for the enrolled secret")
        codes = mfa.new_backup_codes()
        hashes = [backup_code_digest(code) for code in codes]
        await users.activate_mfa(service.db, user.id, hashes)
        return Envelope(MfaVerifyOut(enabled=True, backup_codes=codes))

    @post("/mfa/disable", status_code=200, opt=SELF_SERVICE, summary="Turn TOTP off")
    async def mfa_disable(
        self,
        request: AnyRequest,
        state: State,
        principal: CurrentPrincipal,
        data: JSONBody[MfaCodeIn],
    ) -> Envelope[str]:
        audit_as(request, "auth.mfa_disable", f"users:{principal.user_id}")
        service = services(state)
        limit(request, f"mfa:{principal.user_id}", service.settings.auth.rate_limit_auth)
        user = await users.get_user(service.db, principal.user_id)
        if not user.mfa_enabled:
            raise Conflict("MFA is not enabled")
        if (
            await spend_second_factor(service.db, keys_for(service.settings), user, data.code)
            is None
        ):
            raise Forbidden("code: not a valid TOTP or backup code")
        await users.disable_mfa(service.db, user.id)
        note(request).details["mfa"] = "disabled"
        return Envelope("MFA disabled")
