"""What the control center's store takes and returns: one frozen value per stored thing,
and one per change to it. Secrets appear only in their stored forms (a password hash,
a digest, a sealed TOTP secret); the mapping from rows to these values is in each
concern's module.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Literal

# -- users ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    id: str
    username: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    enabled: bool
    #: Until the password is changed, the user's tokens reach only the password change.
    must_change_password: bool
    mfa_enabled: bool
    #: Sealed (`secret_keys.seal_totp_secret`): the active TOTP secret, or the one
    #: awaiting verification while MFA is not enabled.
    mfa_secret: str | None
    #: The last TOTP time-step accepted: a code is good once.
    mfa_last_step: int | None
    created_at: datetime
    updated_at: datetime
    last_login: datetime | None


@dataclass(frozen=True, slots=True)
class NewUser:
    username: str
    email: str
    password_hash: str
    roles: tuple[str, ...]
    enabled: bool = True
    must_change_password: bool = False


@dataclass(frozen=True, slots=True)
class UserChanges:
    """The fields a change sets; None leaves a field as it is."""

    username: str | None = None
    email: str | None = None
    roles: tuple[str, ...] | None = None
    enabled: bool | None = None
    must_change_password: bool | None = None
    password_hash: str | None = None

    def given(self) -> list[str]:
        """The names of the fields this change sets."""
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]


# -- sessions -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What is stored of a refresh token and the access token issued with it."""

    refresh_hash: str
    access_jti: str
    access_expires_at: datetime
    created_at: datetime
    #: When the refresh token expires.
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SessionState:
    """The user of the session that issued an access token, whether it was revoked, the
    session's (refresh family's) id, and whether its login proved a second factor."""

    user: User
    revoked: bool
    family_id: str
    #: Its login proved a second factor.
    mfa: bool = False


@dataclass(frozen=True, slots=True)
class RefreshRefusal:
    """Why a refresh token was not spent; `user_id` when the token was known."""

    reason: Literal["unknown", "revoked", "expired", "disabled", "reused"]
    user_id: str | None = None


# -- API keys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    user_id: str
    name: str
    description: str
    #: The key's first characters, for recognising it in a list.
    prefix: str
    key_hash: str
    created_at: datetime
    expires_at: datetime | None
    last_used: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewApiKey:
    user_id: str
    name: str
    description: str
    prefix: str
    key_hash: str
    expires_at: datetime | None


# -- policies -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    name: str
    version: str
    description: str
    rules: list[dict[str, Any]]
    enabled: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewPolicy:
    """A policy whose rules were checked (`policies.compile_rules`)."""

    name: str
    rules: list[dict[str, Any]]
    version: str = "1.0.0"
    description: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class PolicyChanges:
    """The fields a change sets; None leaves a field as it is."""

    name: str | None = None
    version: str | None = None
    description: str | None = None
    rules: list[dict[str, Any]] | None = None
    enabled: bool | None = None

    def given(self) -> list[str]:
        """The names of the fields this change sets."""
        return [field.name for field in fields(self) if getattr(self, field.name) is not None]


# -- audit ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditFields:
    """An audit record as its hash covers it (`audit.canonical_json`)."""

    id: str
    timestamp: datetime
    user_id: str | None
    action: str
    resource: str
    result: str
    details: dict[str, Any]
    ip: str | None


@dataclass(frozen=True, slots=True)
class AuditEntry(AuditFields):
    """A stored audit record: its place in the chain and its hash."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The newest record's `seq` and hash; records from `keyed_from` on are keyed."""

    seq: int
    hash: str
    keyed_from: int
