"""The control center's domain errors: the shared access errors
(`orchestrator.http.errors`, named here too) and what only the control center raises.
`orchestrator.http.errors` maps each to its status and code like every `DomainError`."""

from __future__ import annotations

from orchestrator.http.errors import Forbidden, RateLimited, Unauthorized

__all__ = [
    "Forbidden",
    "MfaRequired",
    "PasswordChangeRequired",
    "RateLimited",
    "RegistrationDisabled",
    "Unauthorized",
]


class MfaRequired(Forbidden):
    """The user's role needs TOTP and the user has not enrolled yet."""

    code = "MFA_REQUIRED"


class PasswordChangeRequired(Forbidden):
    """The user still has a one-time password."""

    code = "PASSWORD_CHANGE_REQUIRED"


class RegistrationDisabled(Forbidden):
    """`POST /auth/register` while `auth.registration_enabled` is off."""

    code = "REGISTRATION_DISABLED"
