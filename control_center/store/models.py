"""The control center's tables, on the metadata both apps share (`orchestrator.store.base`).

Secrets are stored only in forms that cannot be shown again: password hashes (scrypt),
SHA-256 digests of API keys, refresh tokens and backup codes. The TOTP secret must stay
readable to check codes: it is stored encrypted with a key kept outside the database,
and never returned after enrollment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from orchestrator.store.base import Base, SequenceInt


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[list[Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    #: Until the password is changed, the user's tokens reach only the password change.
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    mfa_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The active TOTP secret, or the one awaiting `/auth/mfa/verify` while not enabled,
    #: sealed (AES-GCM, `secret_keys.seal_totp_secret`) with a key outside the database.
    mfa_secret: Mapped[str | None] = mapped_column(String(255))
    #: The last TOTP time-step accepted: a code is good once.
    mfa_last_step: Mapped[int | None] = mapped_column(SequenceInt)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_login: Mapped[datetime | None]


class MfaBackupCode(Base):
    __tablename__ = "mfa_backup_codes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None]


class RefreshToken(Base):
    """One refresh token of a session. Rotation marks it used and issues the next one
    in the same family; presenting a used one revokes the whole family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The access token issued together with this refresh token: it is accepted while
    #: this row exists and is not revoked.
    access_jti: Mapped[str] = mapped_column(String(36), index=True)
    access_expires_at: Mapped[datetime]
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The session's login proved a second factor (TOTP or a backup code); every pair
    #: of the family carries it on.
    mfa: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    #: The key's first characters, for recognising it in a list.
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Policy(Base):
    __tablename__ = "policies"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    version: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[list[Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PolicyRevision(Base):
    """One row: a counter bumped in every transaction that changes a policy, so each
    app's cached policy set is reloaded at its next check."""

    __tablename__ = "policy_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(SequenceInt)


class AuditRecord(Base):
    """Append-only, hash-chained: `hash = HMAC-SHA256(audit key, previous hash +
    canonical JSON)`, plain SHA-256 before the head's `keyed_from`."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(SequenceInt, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(36), unique=True)
    timestamp: Mapped[datetime] = mapped_column(index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(100), index=True)
    resource: Mapped[str] = mapped_column(String(300))
    result: Mapped[str] = mapped_column(String(16))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    ip: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditChainHead(Base):
    """One row: the newest record's `seq` and hash. Writers update it first, which
    serializes them, so the chain cannot fork."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(SequenceInt)
    hash: Mapped[str] = mapped_column(String(64))
    #: Records from this seq on are keyed (HMAC); older ones were written before the
    #: chain had a key (migration 0007 sets it past the records it found).
    keyed_from: Mapped[int] = mapped_column(SequenceInt, server_default=text("0"), default=0)
