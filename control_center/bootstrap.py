"""First start: the default policies and, when there is no user at all, `admin`; and at
every start, sealing the TOTP secrets a database from an older version holds in clear.

The administrator's password is `$PROVISIONING_ADMIN_PASSWORD` when set, else a random
one printed once on the console. Either way it is a one-time password: until it is
changed, the account's tokens reach only `PUT /user/password`, `/auth/logout` and
`/auth/mfa/*`.
"""

from __future__ import annotations

import functools
import os

from control_center.audit import record_audit
from control_center.passwords import check_strength, hash_password_async, one_time_password
from control_center.policy_set import seed_default_policies
from control_center.secret_keys import SEALED, keys_for, seal_totp_secret
from control_center.store import users
from control_center.store.records import NewUser
from orchestrator.errors import Conflict, InvalidInput
from orchestrator.settings import ConfigError, Settings
from orchestrator.store.engine import AsyncEngine

ADMIN_PASSWORD_VARIABLE = "PROVISIONING_ADMIN_PASSWORD"  # noqa: S105 (a name)
ADMIN_USERNAME = "admin"
ADMIN_EMAIL = "admin@localhost"


def admin_password_from_environment(settings: Settings) -> str | None:
    password = os.environ.get(ADMIN_PASSWORD_VARIABLE) or None
    if password is not None:
        try:
            check_strength(
                password, settings.auth.min_password_length, field=ADMIN_PASSWORD_VARIABLE
            )
        except InvalidInput as exc:
            raise ConfigError(exc.message) from exc
    return password


async def seed(engine: AsyncEngine, settings: Settings) -> str | None:
    """Create what a new database needs, and seal the TOTP secrets a database from an
    older version holds in clear. Returns the generated administrator password when
    one was made (for the caller to show once), else None."""
    keys = keys_for(settings)
    sealed = await users.seal_clear_totp_secrets(
        engine, SEALED, functools.partial(seal_totp_secret, keys)
    )
    if sealed:
        await record_audit(
            engine,
            key=keys.audit,
            action="users.seal_totp_secrets",
            resource="users:*",
            result="success",
            details={"sealed": sealed},
        )
    if await seed_default_policies(engine):
        await record_audit(
            engine,
            key=keys.audit,
            action="policies.seed",
            resource="policies:*",
            result="success",
            details={"policies": "default"},
        )
    if await users.count_users(engine) > 0:
        return None
    given = admin_password_from_environment(settings)
    password = given or one_time_password(settings.auth.min_password_length)
    try:
        admin = await users.create_user(
            engine,
            NewUser(
                username=ADMIN_USERNAME,
                email=ADMIN_EMAIL,
                password_hash=await hash_password_async(password),
                roles=("admin",),
                must_change_password=True,
            ),
        )
    except Conflict:
        return None  # another process created it at the same moment
    await record_audit(
        engine,
        key=keys.audit,
        action="users.create",
        resource=f"users:{admin.id}",
        result="success",
        details={"username": ADMIN_USERNAME, "roles": ["admin"], "first_start": True},
    )
    return None if given else password
