"""The secrets key, and the keys derived from it for the audit chain and TOTP secrets.

One random key per deployment: `auth.secrets_key` when set, else
`<data_dir>/secrets.key`, created on first use with mode 0600 like `jwt.key`. Processes
with different data dirs that share one database (several hosts on one PostgreSQL)
must all set the same `auth.secrets_key`. The key never enters the database, so whoever
reads or writes the database alone (a backup, a replica, an injected query) gets
neither the TOTP secrets nor the power to rewrite the audit chain unnoticed.

HKDF-SHA256 derives one key per purpose, so no key serves two:

- `audit`: the HMAC-SHA256 key of the audit hash chain (`control_center.audit`);
- `totp`: the AES-256-GCM key of TOTP secrets at rest (`seal_totp_secret`);
- `csrf`: the HMAC-SHA256 key of the console's CSRF tokens (`Gate.sign`).

It is not the JWT key: replacing that one (to end every session at once) must not make
the audit log unverifiable or the TOTP secrets unreadable. Losing this key loses both:
it is backed up with the database.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from control_center.tokens import key_file
from orchestrator.settings import ConfigError, Settings

SECRETS_KEY_FILE = "secrets.key"
MIN_SECRET_BYTES = 32
#: Marks a TOTP secret sealed with the `totp` key (version 1: AES-256-GCM, 96-bit nonce).
SEALED = "v1:"
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Keys:
    audit: bytes
    totp: bytes
    csrf: bytes


def keys_for(settings: Settings, *, create: bool = True) -> Keys:
    """The derived keys (the key file is read once per process). With `create=False`
    (the CLI's checks, which must not invent a key the apps never used), a missing key
    file is a `ConfigError`."""
    return _keys(settings.auth.secrets_key, settings.data_dir, create)


@functools.lru_cache(maxsize=8)
def _keys(configured: str, data_dir: str, create: bool) -> Keys:
    if configured:
        if len(configured.encode("utf-8")) < MIN_SECRET_BYTES:
            raise ConfigError(f"auth.secrets_key must be at least {MIN_SECRET_BYTES} bytes long")
        material = configured.encode("utf-8")
    else:
        path = Path(data_dir) / SECRETS_KEY_FILE
        if not create and not path.exists():
            raise ConfigError(
                f"no secrets key at {path}: use the data dir of the apps that write this "
                "database (--config, PROVISIONING_DATA_DIR), or set auth.secrets_key"
            )
        material = key_file(path).encode("ascii")
    return Keys(
        audit=_derive(material, b"provisioning audit chain v1"),
        totp=_derive(material, b"provisioning totp secrets v1"),
        csrf=_derive(material, b"provisioning console csrf v1"),
    )


def _derive(material: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)


def seal_totp_secret(keys: Keys, user_id: str, secret: str) -> str:
    """The stored form of a TOTP secret: encrypted and bound to its user (the user id is
    authenticated data, so a sealed secret copied to another row does not open)."""
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(keys.totp).encrypt(nonce, secret.encode("utf-8"), user_id.encode("utf-8"))
    return SEALED + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def open_totp_secret(keys: Keys, user_id: str, stored: str) -> str | None:
    """The TOTP secret in `stored`, or None when this key did not seal it for this user
    (a clear secret included: no code then matches)."""
    if not stored.startswith(SEALED):
        return None
    try:
        raw = base64.urlsafe_b64decode(stored[len(SEALED) :])
        plain = AESGCM(keys.totp).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], user_id.encode("utf-8")
        )
    except (InvalidTag, ValueError, binascii.Error):
        return None
    return plain.decode("utf-8")


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED)
