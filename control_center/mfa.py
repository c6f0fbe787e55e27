"""TOTP (RFC 6238, via pyotp) and one-time backup codes.

A code is accepted for the current 30-second step or the one before or after (clock
skew), and only for a step later than the last one the user spent: the caller stores
the returned step, so a code cannot be replayed.
"""

from __future__ import annotations

import hmac
import secrets
import time

import pyotp

ISSUER = "provisioning"
STEP_SECONDS = 30
BACKUP_CODE_COUNT = 10
_BACKUP_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The `otpauth://` URI an authenticator app reads (usually from a QR code)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=ISSUER)


def matching_step(
    secret: str, code: str, last_step: int | None, now: float | None = None
) -> int | None:
    """The time-step `code` belongs to, if it is valid and newer than `last_step`."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = int((time.time() if now is None else now) // STEP_SECONDS)
    for step in (current - 1, current, current + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_backup_codes() -> list[str]:
    """Ten codes like `k7qm-x3dp-9wtr` (about 58 bits each), shown to the user once."""
    return [
        "-".join("".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(4)) for _ in range(3))
        for _ in range(BACKUP_CODE_COUNT)
    ]


def normalize_backup_code(code: str) -> str:
    return code.strip().lower().replace(" ", "")


def looks_like_backup_code(code: str) -> bool:
    return len(normalize_backup_code(code).replace("-", "")) == 12
