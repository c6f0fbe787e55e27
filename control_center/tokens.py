"""JWT access tokens, opaque refresh tokens and API keys, and who presented them.

Access tokens are HMAC-signed JWTs carrying `sub, roles, exp, iat, jti`. The key is
`auth.jwt_secret`, else a random key created once in `<data_dir>/jwt.key` (mode 0600)
and shared by both apps on the machine. Verification pins the configured algorithm, so
`alg: none` and tokens signed any other way are refused. Refresh tokens and API keys
are random strings; only their SHA-256 digests are stored.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt

from control_center.errors import Unauthorized
from orchestrator.ids import new_id
from orchestrator.settings import AuthSettings, ConfigError, Settings

ISSUER = "provisioning-control-center"
HMAC_KEY_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
API_KEY_PREFIX = "prov_live_"
API_KEY_SHOWN_CHARS = 12
KEY_FILE = "jwt.key"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def digest(secret: str) -> str:
    """The stored form of a high-entropy secret (refresh token, API key, backup code)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def signing_key(settings: Settings) -> str:
    """The configured HMAC key, else the machine's key file (created on first use)."""
    auth = settings.auth
    needed = HMAC_KEY_BYTES.get(auth.jwt_algorithm)
    if needed is None:
        raise ConfigError(
            f"auth.jwt_algorithm must be one of {', '.join(HMAC_KEY_BYTES)}, "
            f"not '{auth.jwt_algorithm}'"
        )
    if auth.jwt_secret:
        if len(auth.jwt_secret.encode("utf-8")) < needed:
            raise ConfigError(
                f"auth.jwt_secret must be at least {needed} bytes long for {auth.jwt_algorithm}"
            )
        return auth.jwt_secret
    return key_file(Path(settings.data_dir) / KEY_FILE)


def key_file(path: Path) -> str:
    """The random key kept in `path` (mode 0600), created there on first use: the first
    process to create it wins, every other one reads it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(64))
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)  # atomic: the first app to start wins
        finally:
            temporary.unlink(missing_ok=True)
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, 0o600)
    key = path.read_text().strip()
    if len(key) < 64:
        raise ConfigError(
            f"{path} does not hold a usable key: restore it from a backup, or delete it "
            "to create a new one"
        )
    return key


def issue_access_token(
    auth: AuthSettings,
    key: str,
    user_id: str,
    roles: list[str],
    now: datetime | None = None,
    *,
    not_after: datetime | None = None,
) -> IssuedToken:
    """A signed access token, valid `auth.access_token_ttl` seconds and never past
    `not_after` (its session's refresh lifetime)."""
    now = now or utcnow()
    expires_at = now + timedelta(seconds=auth.access_token_ttl)
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    jti = new_id()
    exp = int(expires_at.timestamp())
    claims: dict[str, Any] = {
        "sub": user_id,
        "roles": list(roles),
        "iat": int(now.timestamp()),
        "exp": exp,
        "jti": jti,
        "iss": ISSUER,
        "typ": "access",
    }
    token = jwt.encode(claims, key, algorithm=auth.jwt_algorithm)
    return IssuedToken(token, jti, datetime.fromtimestamp(exp, UTC))


def decode_access_token(auth: AuthSettings, key: str, token: str) -> dict[str, Any]:
    """The verified claims; `Unauthorized` for an expired, forged or malformed token."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[auth.jwt_algorithm],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "jti", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the token has expired; log in again or refresh it") from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized("the token is invalid") from exc
    if claims.get("typ") != "access" or not isinstance(claims.get("sub"), str):
        raise Unauthorized("the token is invalid")
    return claims


RESET_TYPE = "password_reset"
NOT_A_RESET = (
    "token: not a valid password-reset token; ask for a new one (POST /auth/forgot-password)"
)


def password_binding(password_hash: str) -> str:
    """What a reset token holds of the password it replaces: a reset changes the hash
    (a new salt every time), so the token is spent by its own use."""
    return digest("password-reset\0" + password_hash)[:32]


def issue_reset_token(
    auth: AuthSettings, key: str, user_id: str, password_hash: str, now: datetime | None = None
) -> IssuedToken:
    """A signed, single-use password-reset token for `user_id`, valid
    `auth.reset_token_ttl` seconds; never an access token (`typ` differs)."""
    now = now or utcnow()
    exp = int((now + timedelta(seconds=auth.reset_token_ttl)).timestamp())
    jti = new_id()
    claims = {
        "sub": user_id,
        "iat": int(now.timestamp()),
        "exp": exp,
        "jti": jti,
        "iss": ISSUER,
        "typ": RESET_TYPE,
        "pwd": password_binding(password_hash),
    }
    token = jwt.encode(claims, key, algorithm=auth.jwt_algorithm)
    return IssuedToken(token, jti, datetime.fromtimestamp(exp, UTC))


def decode_reset_token(auth: AuthSettings, key: str, token: str) -> tuple[str, str]:
    """(user id, password binding) of a reset token; `Unauthorized` (401, as for any
    credential) for an expired, forged, malformed or other kind of token."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[auth.jwt_algorithm],
            issuer=ISSUER,
            options={"require": ["sub", "exp", "iat", "iss"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized(
            "token: the password-reset token has expired; ask for a new one "
            "(POST /auth/forgot-password)"
        ) from exc
    except jwt.PyJWTError as exc:
        raise Unauthorized(NOT_A_RESET) from exc
    user_id, binding = claims.get("sub"), claims.get("pwd")
    if claims.get("typ") != RESET_TYPE or not isinstance(user_id, str):
        raise Unauthorized(NOT_A_RESET)
    if not isinstance(binding, str):
        raise Unauthorized(NOT_A_RESET)
    return user_id, binding


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def is_api_key(credential: str) -> bool:
    return credential.startswith("prov_")


def bearer_credential(authorization_header: str | None) -> str:
    """The credential of an `Authorization: Bearer …` header."""
    if not authorization_header:
        raise Unauthorized("authentication required: send Authorization: Bearer <token>")
    scheme, _, credential = authorization_header.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise Unauthorized("the Authorization header must read 'Bearer <token or API key>'")
    return credential
