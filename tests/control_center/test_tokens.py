"""Keys and tokens: the key files, refused settings, and what verification rejects."""

from __future__ import annotations

import stat
import time

import jwt
import pytest

from control_center.errors import Unauthorized
from control_center.passwords import check_strength, hash_password, verify_password
from control_center.secret_keys import keys_for, open_totp_secret, seal_totp_secret
from control_center.tokens import (
    decode_access_token,
    issue_access_token,
    signing_key,
)
from orchestrator.errors import InvalidInput
from orchestrator.settings import AuthSettings, ConfigError, Settings

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


def test_without_a_configured_key_one_is_created_once_with_mode_0600(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    key = signing_key(settings)
    path = tmp_path / "data" / "jwt.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(key) >= 64
    assert signing_key(settings) == key
    assert [p.name for p in path.parent.iterdir()] == ["jwt.key"]


def test_a_short_configured_key_or_an_unknown_algorithm_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        signing_key(Settings(data_dir=str(tmp_path), auth=AuthSettings(jwt_secret="short")))
    with pytest.raises(ConfigError, match="jwt_algorithm"):
        signing_key(Settings(data_dir=str(tmp_path), auth=AuthSettings(jwt_algorithm="none")))


KEY = "k" * 64
AUTH = AuthSettings(jwt_secret=KEY)


def test_an_issued_token_verifies_with_its_claims():
    issued = issue_access_token(AUTH, KEY, "u-1", ["viewer"])
    claims = decode_access_token(AUTH, KEY, issued.token)
    assert claims["sub"] == "u-1"
    assert claims["roles"] == ["viewer"]
    assert claims["jti"] == issued.jti
    assert {"exp", "iat"} <= claims.keys()


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode({"sub": "u-1", "exp": int(time.time()) + 60}, KEY, algorithm="HS256"),
        jwt.encode(
            {"sub": "u-1", "exp": int(time.time()) + 60, "iat": 1, "jti": "j", "iss": "elsewhere"},
            KEY,
            algorithm="HS256",
        ),
        "a.b.c",
        "",
    ],
)
def test_tokens_missing_claims_or_from_elsewhere_are_refused(token):
    with pytest.raises(Unauthorized):
        decode_access_token(AUTH, KEY, token)


def test_passwords_hash_and_verify():
    stored = hash_password("Correct-Horse-9")
    assert stored.startswith("scrypt$")
    assert verify_password("Correct-Horse-9", stored)
    assert not verify_password("correct-horse-9", stored)
    assert not verify_password("Correct-Horse-9", "not a hash")


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Short-1", "at least 12"),
        ("alllowercaseletters", "two kinds"),
        ("Ab1Ab1Ab1Ab1Ab1", "distinct"),
        ("Correct-Horse-9", ""),
    ],
)
def test_password_strength(password, problem):
    if not problem:
        check_strength(password, 12)
        return
    with pytest.raises(InvalidInput, match=problem):
        check_strength(password, 12)


def test_the_secrets_key_file_is_made_once_with_mode_0600_and_never_by_a_check(tmp_path):
    settings = Settings(data_dir=str(tmp_path / "data"))
    with pytest.raises(ConfigError, match="no secrets key at"):
        keys_for(settings, create=False)
    keys = keys_for(settings)
    path = tmp_path / "data" / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys_for(settings, create=False) == keys
    assert keys.audit != keys.totp  # one key per purpose
    assert path.read_text().strip().encode() not in (keys.audit, keys.totp)


def test_a_short_configured_secrets_key_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="secrets_key must be at least 32 bytes"):
        keys_for(Settings(data_dir=str(tmp_path), auth=AuthSettings(secrets_key="short")))


def test_a_sealed_totp_secret_opens_only_for_its_user_and_key(tmp_path):
    keys = keys_for(Settings(data_dir=str(tmp_path), auth=AuthSettings(secrets_key="s" * 32)))
    other = keys_for(Settings(data_dir=str(tmp_path), auth=AuthSettings(secrets_key="t" * 32)))
    sealed = seal_totp_secret(keys, "u-1", "JBSWY3DPEHPK3PXP")
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert open_totp_secret(keys, "u-1", sealed) == "JBSWY3DPEHPK3PXP"
    assert open_totp_secret(keys, "u-2", sealed) is None
    assert open_totp_secret(other, "u-1", sealed) is None
    assert open_totp_secret(keys, "u-1", "JBSWY3DPEHPK3PXP") is None  # clear: refused
    assert open_totp_secret(keys, "u-1", "v1:not base64!") is None
