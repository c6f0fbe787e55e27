"""TOTP secrets are stored sealed (AES-GCM) with a key kept outside the database: reading
the database does not give them, and a database from an older version, which held
them in clear, is sealed at the next start."""

from __future__ import annotations

import pyotp
from sqlalchemy import select, update

from control_center.store.models import User
from tests.backend import execute, fetch
from tests.control_center.conftest import (
    audit_rows,
    create_user,
    data_of,
    error_of,
    login,
    next_totp,
    token_of,
)


def stored_secret(center, user_id: str) -> str:
    rows = fetch(center.database, select(User.mfa_secret).where(User.id == user_id))
    return str(rows[0]["mfa_secret"])


def enrolled(center, admin_client) -> tuple[dict, str, list[str]]:
    """A new user with TOTP enabled: the user, the secret, the backup codes."""
    user = create_user(admin_client, ["viewer"])
    with center.client(token_of(center, user)) as own:
        secret = data_of(own.post("/auth/mfa/enroll"))["secret"]
        assert secret not in stored_secret(center, user["id"])  # sealed while pending too
        codes = data_of(own.post("/auth/mfa/verify", json={"code": pyotp.TOTP(secret).now()}))
    return user, secret, codes["backup_codes"]


def test_a_totp_secret_is_stored_sealed_and_still_checks_codes(center, admin_client):
    user, secret, _ = enrolled(center, admin_client)
    stored = stored_secret(center, user["id"])
    assert secret not in stored and secret.lower() not in stored.lower()
    assert stored.startswith("v1:")
    with center.client() as client:
        data_of(login(client, user["username"], user["password"], next_totp(secret)))


def test_a_sealed_secret_copied_to_another_user_does_not_open(center, admin_client):
    victim, secret, _ = enrolled(center, admin_client)
    other, _, backup_codes = enrolled(center, admin_client)
    copy = update(User).where(User.id == other["id"])
    execute(center.database, copy.values(mfa_secret=stored_secret(center, victim["id"])))
    with center.client() as client:
        refused = login(client, other["username"], other["password"], next_totp(secret))
        error_of(refused, 401, "UNAUTHORIZED")
        # Backup codes are digests, not sealed: they still let the user in to re-enroll.
        data_of(login(client, other["username"], other["password"], backup_codes[0]))


def test_a_secret_left_in_clear_by_an_older_version_is_sealed_at_the_next_start(
    center, admin_client
):
    user, secret, _ = enrolled(center, admin_client)
    execute(center.database, update(User).where(User.id == user["id"]).values(mfa_secret=secret))
    center.stop()
    center.start()
    stored = stored_secret(center, user["id"])
    assert stored.startswith("v1:") and secret not in stored
    with center.client() as client:
        data_of(login(client, user["username"], user["password"], next_totp(secret)))
    sealing = audit_rows(center.database, action="users.seal_totp_secrets")
    assert [r["details"]["sealed"] for r in sealing] == [1]
