"""One base URL for administrators: the orchestrator answers the control center's
`/users`, `/policies` (with `POST /policies/validate`) and `/audit/logs`, also under
`/api/v1`, with the control center's own app over the same database: the same answers,
the same policies, the same audit trail. Real processes: a control center and an
orchestrator on one data directory."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.accounts import Pair, new_user
from tests.control_center.conftest import (
    Admin,
    audit_rows,
    bootstrap_admin,
    data_of,
    error_of,
    token_of,
)
from tests.control_center.servers import JWT_SECRET, ControlCenterProcess
from tests.servers import OrchestratorProcess

GENEROUS = {
    "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
    "PROVISIONING_AUTH__RATE_LIMIT_AUTH": "10000",
    "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "10000",
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    data_dir = tmp_path_factory.mktemp("admin-one-base-url")
    center = ControlCenterProcess(data_dir, env=GENEROUS).start()
    try:
        orchestrator = OrchestratorProcess(data_dir, env=GENEROUS).start()
        try:
            yield Pair(center, orchestrator)
        finally:
            orchestrator.stop()
    finally:
        center.stop()


@pytest.fixture(scope="module")
def admin(pair: Pair) -> Admin:
    return bootstrap_admin(pair.center)


def _at(pair: Pair, token: str, center: bool = False) -> httpx.Client:
    url = pair.center.url if center else pair.orchestrator.url
    return httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {token}"})


def _same(answer: httpx.Response, expected: httpx.Response) -> Any:
    assert answer.status_code == expected.status_code, answer.text
    assert answer.json() == expected.json()
    assert answer.headers.get("x-total-count") == expected.headers.get("x-total-count")
    return answer.json()


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_the_orchestrator_answers_the_admin_reads_as_the_control_center(
    pair: Pair, admin: Admin, prefix: str
) -> None:
    with _at(pair, admin.token) as here, _at(pair, admin.token, center=True) as there:
        for path in ("/users?limit=5", "/policies", f"/users/{admin.user_id}"):
            _same(here.get(prefix + path), there.get(path))
        logs = "/audit/logs?action=auth.login&limit=3"
        body = _same(here.get(prefix + logs), there.get(logs))
        assert body["data"] and all(row["action"] == "auth.login" for row in body["data"])
        for condition in ("'admin' in user.roles", "user.rol == 'x'", "  user.id ==", "1 + 1"):
            sent = {"condition": condition}
            _same(
                here.post(f"{prefix}/policies/validate", json=sent),
                there.post("/policies/validate", json=sent),
            )
        _same(here.get(f"{prefix}/users/no-such-user"), there.get("/users/no-such-user"))
    # The account clients' /v1 is for the account endpoints only.
    with _at(pair, admin.token) as here:
        error_of(here.get("/v1/users"), 404, "NOT_FOUND")
        # Litestar mounts match a prefix of the text (`/user` takes `/users…`): only
        # whole path segments reach the control center's app.
        error_of(here.get("/usersx"), 404, "NOT_FOUND")
        error_of(here.get("/api/v1/user/profilex"), 404, "NOT_FOUND")
        assert data_of(here.get("/v1/user/profile"))["username"] == "admin"


def test_validation_gives_the_error_and_its_position(pair: Pair, admin: Admin) -> None:
    with _at(pair, admin.token) as here:
        check = here.post("/policies/validate", json={"condition": "'admin' in user.roles"})
        assert data_of(check) == {"valid": True, "error": None, "line": None, "column": None}
        unknown = data_of(here.post("/policies/validate", json={"condition": "  user.rol == 1"}))
        assert unknown["valid"] is False
        assert unknown["error"].startswith("unknown name 'user.rol'")
        assert (unknown["line"], unknown["column"]) == (1, 3)  # in the text as sent
        short = data_of(here.post("/policies/validate", json={"condition": "user.id =="}))
        assert (short["valid"], short["line"], short["column"]) == (False, 1, 11)  # the end
        call = data_of(
            here.post("/policies/validate", json={"condition": "(user.id == 'é'\n or len(1))"})
        )
        assert call["error"] == "a function call is not allowed"
        assert (call["line"], call["column"]) == (2, 5)
        wrong = here.post("/policies/validate", json={"text": "x"})
        assert wrong.status_code in (400, 422) and wrong.json()["code"] == "INVALID_INPUT"
    # A check changes nothing: not audited (it is asked as an editor types).
    assert audit_rows(pair.orchestrator.database, action="policies.validate") == []


def test_admin_changes_at_the_orchestrator_are_the_control_centers(
    pair: Pair, admin: Admin
) -> None:
    name = f"made-{secrets.token_hex(4)}"
    body = {
        "username": name,
        "email": f"{name}@example.com",
        "password": "Made-Here-Password-42",
        "roles": ["viewer"],
    }
    with _at(pair, admin.token) as here, _at(pair, admin.token, center=True) as there:
        made = data_of(here.post("/api/v1/users", json=body), 201)
        assert data_of(there.get(f"/users/{made['id']}"))["username"] == name
        assert data_of(here.put(f"/users/{made['id']}", json={"enabled": False}))
        assert data_of(there.get(f"/users/{made['id']}"))["enabled"] is False
        rows = audit_rows(pair.orchestrator.database, action="users.create")
        assert [row["resource"] for row in rows][-1] == f"users:{made['id']}"
        policy = {
            "name": f"p-{name}",
            "rules": [{"effect": "Deny", "resource": "vms:*", "condition": "user.id == 'x'"}],
        }
        created = data_of(here.post("/policies", json=policy), 201)
        assert data_of(there.get(f"/policies/{created['id']}"))["name"] == policy["name"]
        bad = {**policy, "name": f"q-{name}", "rules": [{**policy["rules"][0], "condition": "("}]}
        message = error_of(here.post("/policies", json=bad), 422, "INVALID_INPUT")
        assert message.startswith("rules[0].condition: is not a valid expression")
        assert data_of(here.delete(f"/policies/{created['id']}"))
        assert data_of(here.delete(f"/users/{made['id']}"))
        error_of(there.get(f"/users/{made['id']}"), 404, "NOT_FOUND")


@pytest.mark.parametrize(("roles", "reads"), [(["viewer"], True), (["member"], False)])
def test_the_policies_decide_at_the_orchestrator_too(
    pair: Pair, roles: list[str], reads: bool
) -> None:
    user = new_user(pair, roles)
    token = token_of(pair.center, user)
    with _at(pair, token) as here:
        for path in ("/users", "/policies", "/audit/logs"):
            listed = here.get(path)
            if reads:  # the default policies let viewers read and list everything
                data_of(listed)
            else:
                error_of(listed, 403, "FORBIDDEN")
        body = {"username": "x" + user["username"], "email": "x@example.com", "password": "P-1x"}
        error_of(here.post("/users", json=body), 403, "FORBIDDEN")
        error_of(here.post("/policies/validate", json={"condition": "x"}), 403, "FORBIDDEN")
        error_of(here.delete(f"/users/{user['id']}"), 403, "FORBIDDEN")
    denied = audit_rows(pair.orchestrator.database, user_id=user["id"], result="denied")
    assert {row["action"] for row in denied} >= {"users.create", "policies.validate"}


def test_without_a_credential_the_admin_endpoints_answer_401(pair: Pair) -> None:
    with httpx.Client(base_url=pair.orchestrator.url, timeout=30) as anonymous:
        for path in ("/users", "/api/v1/policies", "/audit/logs"):
            error_of(anonymous.get(path), 401, "UNAUTHORIZED")
        error_of(anonymous.post("/policies/validate", json={"condition": "x"}), 401, "UNAUTHORIZED")
