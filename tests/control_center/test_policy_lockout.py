"""No policy change may leave the administrators unable to manage policies: one request
must not lock every administrator out, with no API call left to undo it.

A control center of its own: these tests change the policies everyone depends on."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, update

from control_center.policy_set import restore_default_policies, seed_default_policies
from control_center.store import users
from control_center.store.models import Policy, User
from control_center.store.records import NewUser
from orchestrator.settings import Settings
from orchestrator.store.engine import create_engine, ensure_schema
from tests.backend import settings_fields
from tests.control_center.conftest import (
    GENEROUS,
    Admin,
    audit_rows,
    bootstrap_admin,
    create_user,
    data_of,
    error_of,
)
from tests.control_center.servers import ControlCenterProcess


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlCenterProcess]:
    process = ControlCenterProcess(tmp_path_factory.mktemp("lockout"), env=GENEROUS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(center: ControlCenterProcess) -> Admin:
    return bootstrap_admin(center)


@pytest.fixture
def admin_client(center: ControlCenterProcess, admin: Admin) -> Iterator[httpx.Client]:
    with center.client(admin.token) as client:
        yield client


def policy_named(client: httpx.Client, name: str) -> dict[str, Any]:
    return next(p for p in data_of(client.get("/policies")) if p["name"] == name)


def refused_as_lockout(response: httpx.Response) -> str:
    message = error_of(response, 409, "CONFLICT")
    assert "no enabled administrator could still manage policies" in message
    return message


def test_disabling_or_deleting_the_administrators_policy_is_refused(center, admin_client):
    admins = policy_named(admin_client, "admin_access_policy")
    path = f"/policies/{admins['id']}"
    message = refused_as_lockout(admin_client.put(path, json={"enabled": False}))
    assert "no policy allows it" in message  # why the administrators would be refused
    refused_as_lockout(admin_client.delete(path))
    nobody = [{"effect": "Allow", "resource": "*", "action": ["*"], "condition": "False"}]
    refused_as_lockout(admin_client.put(path, json={"rules": nobody}))
    # Nothing changed: the administrators still manage everything.
    assert policy_named(admin_client, "admin_access_policy") == admins
    data_of(admin_client.get("/users"))
    refusal = audit_rows(center.database, action="policies.update", result="failure")[-1]
    assert refusal["details"]["code"] == "CONFLICT"


def test_a_deny_that_shuts_every_administrator_out_is_refused(admin_client):
    shut = {
        "name": "freeze-policies",
        "rules": [{"effect": "Deny", "resource": "policies:*", "action": ["update"]}],
    }
    message = refused_as_lockout(admin_client.post("/policies", json=shut))
    assert "denied by policy 'freeze-policies' rule 0" in message
    error_of(admin_client.get("/policies/none"), 404, "NOT_FOUND")
    assert "freeze-policies" not in {p["name"] for p in data_of(admin_client.get("/policies"))}
    # A Deny elsewhere is fine.
    elsewhere = {
        "name": "no-night-deletes",
        "rules": [
            {
                "effect": "Deny",
                "resource": "servers:*",
                "action": ["delete"],
                "condition": "time.hour < 0",
            }
        ],
    }
    created = data_of(admin_client.post("/policies", json=elsewhere), 201)
    data_of(admin_client.delete(f"/policies/{created['id']}"))


def test_a_change_is_allowed_while_another_rule_keeps_the_administrators_in(admin_client):
    keeper = {
        "name": "admins-manage-policies",
        "rules": [
            {
                "effect": "Allow",
                "resource": "policies:*",
                "action": ["*"],
                "condition": "'admin' in user.roles",
            }
        ],
    }
    kept = data_of(admin_client.post("/policies", json=keeper), 201)
    admins = policy_named(admin_client, "admin_access_policy")
    data_of(admin_client.put(f"/policies/{admins['id']}", json={"enabled": False}))
    error_of(admin_client.get("/users"), 403, "FORBIDDEN")  # what the change meant
    # ... and the remaining rule is now the one that must stay.
    refused_as_lockout(admin_client.delete(f"/policies/{kept['id']}"))
    data_of(admin_client.put(f"/policies/{admins['id']}", json={"enabled": True}))
    data_of(admin_client.delete(f"/policies/{kept['id']}"))
    data_of(admin_client.get("/users"))


def test_every_enabled_administrator_counts(admin_client, admin: Admin):
    other = create_user(admin_client, ["admin"])
    one_out = {
        "name": "not-this-admin",
        "rules": [
            {
                "effect": "Deny",
                "resource": "policies:*",
                "action": ["update"],
                "condition": f"user.id == '{admin.user_id}'",
            }
        ],
    }
    # The other administrator could still manage policies.
    created = data_of(admin_client.post("/policies", json=one_out), 201)
    data_of(admin_client.delete(f"/policies/{created['id']}"))  # `delete` is not denied
    # A disabled administrator does not count.
    data_of(admin_client.put(f"/users/{other['id']}", json={"enabled": False}))
    refused_as_lockout(admin_client.post("/policies", json=one_out))


async def test_restoring_the_defaults_also_disables_a_deny_that_shuts_administrators_out(
    tmp_path,
):
    settings = Settings(**settings_fields(tmp_path))
    engine = create_engine(settings)
    try:
        await ensure_schema(engine, settings)
        await seed_default_policies(engine)
        await users.create_user(
            engine,
            NewUser(username="root", email="root@example.com", password_hash="-", roles=("admin",)),
        )
        async with engine.begin() as connection:  # behind the API's back: it refuses this
            await connection.execute(
                insert(Policy),
                [
                    {
                        "id": "deny-all",
                        "name": "deny-all",
                        "version": "1",
                        "description": "",
                        "rules": [{"effect": "Deny", "resource": "*", "action": ["*"]}],
                        "enabled": True,
                        "created_at": datetime.now(UTC),
                        "updated_at": datetime.now(UTC),
                    }
                ],
            )
        restored = await restore_default_policies(engine)
        assert restored.changes == [
            "disabled deny-all: it denied the administrators 'update' on 'policies:*'"
        ]
        assert restored.problem is None
        assert (await restore_default_policies(engine)).changes == []
        # Without an enabled administrator there is nobody to let back in: it says so.
        async with engine.begin() as connection:
            await connection.execute(update(User).values(enabled=False))
        assert (await restore_default_policies(engine)).problem == (
            "there is no enabled administrator"
        )
    finally:
        await engine.dispose()
