"""Password hashing (scrypt, from the standard library) and the strength rule.

A hash reads `scrypt$<n>$<r>$<p>$<salt>$<digest>` (base64), so the cost can be raised
later without invalidating stored hashes. Hashing takes tens of milliseconds on
purpose; callers on the event loop run it in a thread (`hash_password_async`).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
import string

from orchestrator.errors import InvalidInput

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
MAX_PASSWORD_LENGTH = 1024
CLASSES = (string.ascii_lowercase, string.ascii_uppercase, string.digits)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=128 * n * r * 2
    )


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; a malformed hash never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the user does not exist, so both cases take the same time
    (made on first use: an scrypt hash costs a start-up tens of milliseconds)."""
    return hash_password(secrets.token_urlsafe(16))


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str | None) -> bool:
    """`verify_password` in a thread; with no stored hash, spend the same time and fail."""
    if stored is None:
        await asyncio.to_thread(verify_password, password, _dummy_hash())
        return False
    return await asyncio.to_thread(verify_password, password, stored)


def check_strength(password: str, min_length: int, *, field: str = "password") -> None:
    """Refuse (422) a password that is too short, too long, or all of one character class."""
    if len(password) < min_length:
        raise InvalidInput(f"{field}: must be at least {min_length} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"{field}: must be at most {MAX_PASSWORD_LENGTH} characters long")
    used = {i for i, chars in enumerate(CLASSES) for c in password if c in chars}
    others = any(not any(c in chars for chars in CLASSES) for c in password)
    if len(used) + int(others) < 2:
        raise InvalidInput(
            f"{field}: must mix at least two kinds of characters "
            "(lower case, upper case, digits, symbols)"
        )
    if len(set(password)) < 4:
        raise InvalidInput(f"{field}: uses fewer than 4 distinct characters")


def one_time_password(min_length: int = 24) -> str:
    """A random password that passes `check_strength` with this minimum length."""
    alphabet = string.ascii_letters + string.digits
    while True:
        candidate = "".join(secrets.choice(alphabet) for _ in range(max(24, min_length)))
        if any(c.isdigit() for c in candidate) and any(c.isalpha() for c in candidate):
            return candidate
