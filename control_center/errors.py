"""The control center's domain errors; `orchestrator.api.envelope` maps each to its status
and code like every other `DomainError`."""

from __future__ import annotations

from orchestrator.errors import DomainError


class Unauthorized(DomainError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    status_code = 401
    code = "UNAUTHORIZED"


class Forbidden(DomainError):
    """Authenticated, but no policy allows the action (or one denies it)."""

    status_code = 403
    code = "FORBIDDEN"


class MfaRequired(Forbidden):
    """The user's role needs TOTP and the user has not enrolled yet."""

    code = "MFA_REQUIRED"


class PasswordChangeRequired(Forbidden):
    """The user still has a one-time password."""

    code = "PASSWORD_CHANGE_REQUIRED"


class RateLimited(DomainError):
    status_code = 429
    code = "RATE_LIMITED"
