"""Request and response types of the control center API (seeds 003 and 002), and the
mapping from the store's records to them. No response type has a field for a password, a
password hash or a TOTP secret; a key or secret appears only in the one response
that creates it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from control_center.conditions import MAX_LENGTH as CONDITION_LENGTH
from control_center.store.records import ApiKey, AuditEntry, Policy, User
from orchestrator.fields import NO_CONTROL, Name, Text, Version

Username = Annotated[
    str, msgspec.Meta(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
]
#: Whitespace and control characters are never part of an address.
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@\s\x00-\x1f\x7f-\x9f]+$",
    ),
]
Role = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
Roles = Annotated[list[Role], msgspec.Meta(max_length=20)]
Secret = Annotated[str, msgspec.Meta(max_length=1024)]
#: What names an account at login (a username or an email), a code, a token.
Credential = Annotated[str, msgspec.Meta(max_length=254, pattern=NO_CONTROL)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=2048, pattern=NO_CONTROL)]
Code = Annotated[str, msgspec.Meta(max_length=64, pattern=NO_CONTROL)]


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    password: Secret
    username: Credential | None = None
    #: Seed 002 logs in by email; either names the account.
    email: Credential | None = None
    mfa_code: Code | None = None


class UserBrief(msgspec.Struct):
    id: str
    username: str
    email: str
    roles: list[str]


class LoginOut(msgspec.Struct):
    token: str
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    user: UserBrief
    #: What the user must do before the token reaches anything else:
    #: MFA_REQUIRED, PASSWORD_CHANGE_REQUIRED.
    restrictions: list[str]
    #: `token` again, under the name account clients (sign-up flows) read.
    access_token: str = ""

    def __post_init__(self) -> None:
        self.access_token = self.access_token or self.token


class RefreshIn(msgspec.Struct, forbid_unknown_fields=True):
    """One of `refresh_token` and `token` (the schema says so too)."""

    refresh_token: Token | None = None
    #: Either field carries a refresh token, or the current access token (which
    #: refreshes once: `control_center.sessions.rotate`).
    token: Token | None = None


RefreshBody = Annotated[
    RefreshIn,
    msgspec.Meta(
        extra_json_schema={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("refresh_token", "token")
            ]
        }
    ),
]


class TokenOut(msgspec.Struct):
    token: str
    expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    #: `token` again, under the name account clients read.
    access_token: str = ""

    def __post_init__(self) -> None:
        self.access_token = self.access_token or self.token


class MfaEnrollOut(msgspec.Struct):
    secret: str
    otpauth_uri: str


class MfaCodeIn(msgspec.Struct, forbid_unknown_fields=True):
    code: Code


class MfaVerifyOut(msgspec.Struct):
    enabled: bool
    backup_codes: list[str]


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    email: Email
    password: Secret
    roles: Roles = msgspec.field(default_factory=lambda: ["viewer"])
    enabled: bool = True
    must_change_password: bool = False


class RegisterIn(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    email: Email
    password: Secret
    #: Checked against `password` when given.
    confirm_password: Secret | None = None


class ForgotIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Credential


class ResetIn(msgspec.Struct, forbid_unknown_fields=True):
    token: Token
    new_password: Secret
    #: Checked against `new_password` when given.
    confirm_password: Secret | None = None


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username | None = None
    email: Email | None = None
    roles: Roles | None = None
    enabled: bool | None = None
    #: Set a new password (an administrator's reset); usually with must_change_password.
    password: Secret | None = None
    must_change_password: bool | None = None


class UserOut(msgspec.Struct):
    id: str
    username: str
    email: str
    roles: list[str]
    enabled: bool
    mfa_enabled: bool
    must_change_password: bool
    created_at: datetime
    updated_at: datetime
    last_login: datetime | None


class ProfileOut(msgspec.Struct):
    id: str
    username: str
    email: str
    roles: list[str]
    created_at: datetime
    updated_at: datetime
    last_login: datetime | None
    is_active: bool
    mfa_enabled: bool
    must_change_password: bool


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    #: Accepted only unchanged: an administrator renames (`PUT /users/{id}`).
    username: Username | None = None
    email: Email | None = None
    #: Required to change the email.
    current_password: Secret | None = None


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Secret
    new_password: Secret
    confirm_new_password: Secret | None = None


class ApiKeyIn(msgspec.Struct, forbid_unknown_fields=True):
    """At most one of `expires_at` and `expires_in_days` (the schema says so too)."""

    name: Name
    description: Text = ""
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None
    expires_in_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] | None = None


ApiKeyBody = Annotated[
    ApiKeyIn,
    msgspec.Meta(
        extra_json_schema={
            "not": {
                "required": ["expires_at", "expires_in_days"],
                "properties": {
                    "expires_at": {"type": "string"},
                    "expires_in_days": {"type": "integer"},
                },
            }
        }
    ),
]


class ApiKeyCreated(msgspec.Struct):
    id: str
    name: str
    description: str
    #: The key itself: shown in this response only.
    key: str
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None


class ApiKeyOut(msgspec.Struct):
    id: str
    user_id: str
    name: str
    description: str
    key_prefix: str
    created_at: datetime
    expires_at: datetime | None
    last_used: datetime | None
    revoked_at: datetime | None


#: A glob over resources (`servers:*`) or actions (`read`).
Glob = Annotated[str, msgspec.Meta(min_length=1, max_length=300, pattern=NO_CONTROL)]
Globs = Glob | Annotated[list[Glob], msgspec.Meta(min_length=1, max_length=100)]


class RuleIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """A policy rule as sent (`control_center.policies` compiles it); stored as sent."""

    effect: Literal["Allow", "Deny"]
    resource: Globs
    #: Every action when absent.
    action: Globs | None = None
    #: An expression over `user`, `resource`, `request`, `time` (docs/security.md).
    condition: Annotated[str, msgspec.Meta(max_length=CONDITION_LENGTH)] | None = None
    description: Text | None = None


Rules = Annotated[list[RuleIn], msgspec.Meta(max_length=100)]


class PolicyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: Name
    rules: Rules
    version: Version = "1.0.0"
    description: Text = ""
    enabled: bool = True


class PolicyUpdate(msgspec.Struct, forbid_unknown_fields=True):
    name: Name | None = None
    rules: Rules | None = None
    version: Version | None = None
    description: Text | None = None
    enabled: bool | None = None


class PolicyOut(msgspec.Struct):
    id: str
    name: str
    version: str
    description: str
    rules: list[dict[str, Any]]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ConditionIn(msgspec.Struct, forbid_unknown_fields=True):
    """A rule's condition to check (`POST /policies/validate`); longer than a rule takes,
    so that the parser's own message says how long it may be."""

    condition: Annotated[str, msgspec.Meta(max_length=4 * CONDITION_LENGTH)]


class ConditionCheck(msgspec.Struct):
    """Whether a condition compiles; if not, why and where (`line`, `column`: from 1, in
    the text as sent; absent when no one place is at fault)."""

    valid: bool
    error: str | None = None
    line: int | None = None
    column: int | None = None


class PolicyCreated(msgspec.Struct):
    id: str
    name: str
    version: str


class AuditOut(msgspec.Struct):
    id: str
    timestamp: datetime
    user_id: str | None
    action: str
    resource: str
    result: str
    details: dict[str, Any]
    ip: str | None
    hash: str


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        username=user.username,
        email=user.email,
        roles=list(user.roles),
        enabled=user.enabled,
        mfa_enabled=user.mfa_enabled,
        must_change_password=user.must_change_password,
        created_at=user.created_at,
        updated_at=user.updated_at,
        last_login=user.last_login,
    )


def profile_out(user: User) -> ProfileOut:
    return ProfileOut(
        id=user.id,
        username=user.username,
        email=user.email,
        roles=list(user.roles),
        created_at=user.created_at,
        updated_at=user.updated_at,
        last_login=user.last_login,
        is_active=user.enabled,
        mfa_enabled=user.mfa_enabled,
        must_change_password=user.must_change_password,
    )


def api_key_out(key: ApiKey) -> ApiKeyOut:
    return ApiKeyOut(
        id=key.id,
        user_id=key.user_id,
        name=key.name,
        description=key.description,
        key_prefix=key.prefix,
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used=key.last_used,
        revoked_at=key.revoked_at,
    )


def policy_out(policy: Policy) -> PolicyOut:
    return PolicyOut(
        id=policy.id,
        name=policy.name,
        version=policy.version,
        description=policy.description,
        rules=list(policy.rules),
        enabled=policy.enabled,
        created_at=policy.created_at,
        updated_at=policy.updated_at,
    )


def audit_out(entry: AuditEntry) -> AuditOut:
    return AuditOut(
        id=entry.id,
        timestamp=entry.timestamp,
        user_id=entry.user_id,
        action=entry.action,
        resource=entry.resource,
        result=entry.result,
        details=dict(entry.details),
        ip=entry.ip,
        hash=entry.hash,
    )
