"""The console's admin pages over HTTP (issue 17): users, API keys, policies (and the
condition check the policy form asks as the admin types), the audit log. An admin uses
each; a member is refused by the API's policies; a viewer reads without buttons and a
forced form gets 403; every form wants the CSRF token."""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ui.conftest import (
    PASSWORD,
    Account,
    Console,
    csrf_of,
    enroll_totp,
    make_user,
    next_totp,
)

ONE_TIME = re.compile(r'<code id="one-time-password"[^>]*>([^<]+)</code>')


@pytest.fixture(scope="module")
def boss(console: Console) -> Iterator[httpx.Client]:
    """An administrator (TOTP on, as the admin role requires) signed in to the console
    once for the module: a TOTP code is accepted once."""
    make_user(console.server.env, "boss", ["admin"])
    secret = enroll_totp(console.center, "boss")
    console.accounts["boss"] = Account("boss", PASSWORD, ["admin"], secret)
    with console.browser() as http:
        form = {"username": "boss", "password": PASSWORD, "code": next_totp(secret)}
        signed_in = http.post("/ui/login", data=form)
        assert signed_in.status_code == 303, signed_in.text
        yield http


def api_of(console: Console, http: httpx.Client) -> httpx.Client:
    """The API as the browser's session (its access-token cookie as the bearer)."""
    http.get("/ui/session")  # renewed if it lapsed
    token = http.cookies["provisioning_session"]
    return httpx.Client(
        base_url=console.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    )


def user_id(console: Console, boss: httpx.Client, username: str) -> str:
    with api_of(console, boss) as api:
        found = api.get("/users", params={"limit": 1000}).json()["data"]
    return str(next(u["id"] for u in found if u["username"] == username))


def login_answer(console: Console, username: str, password: str) -> httpx.Response:
    with console.center.client() as http:
        return http.post("/auth/login", json={"username": username, "password": password})


def test_the_admin_pages_are_in_an_admins_menu_only(console: Console, boss: httpx.Client):
    page = boss.get("/ui/workflows")
    for path in ("/ui/admin/users", "/ui/admin/api-keys", "/ui/admin/policies", "/ui/admin/audit"):
        assert f'href="{path}"' in page.text
    with console.login("ops") as http:
        assert "/ui/admin/" not in http.get("/ui/workflows").text


def test_an_admin_makes_a_user_whose_one_time_password_shows_once(
    console: Console, boss: httpx.Client
):
    page = boss.get("/ui/admin/users")
    assert page.status_code == 200
    assert 'data-user-id="' in page.text and ">boss<" in page.text
    token = csrf_of(page.text)
    name = f"new-{secrets.token_hex(3)}"
    form = {"username": name, "email": f"{name}@example.com", "role": ["operator", "viewer"]}
    assert boss.post("/ui/admin/users", data=form).status_code == 403  # no CSRF token
    made = boss.post("/ui/admin/users", data={**form, "_csrf": token, "other_roles": "ci, qa"})
    assert made.status_code == 201, made.text
    password = ONE_TIME.search(made.text)
    assert password, made.text
    one_time = html.unescape(password.group(1))
    # The password works once changed: the first login is restricted to changing it.
    first = login_answer(console, name, one_time)
    assert first.status_code == 200
    assert first.json()["data"]["restrictions"] == ["PASSWORD_CHANGE_REQUIRED"]
    assert first.json()["data"]["user"]["roles"] == ["operator", "viewer", "ci", "qa"]
    # Never shown again.
    listing = boss.get("/ui/admin/users", params={"role": "ci"})
    assert one_time not in listing.text and f">{name}<" in listing.text
    assert "1 user<" in listing.text
    # The same name again: the API's refusal in the form, the fields as typed.
    again = boss.post("/ui/admin/users", data={**form, "_csrf": token})
    assert again.status_code == 409, again.text
    assert 'class="error"' in again.text and f'value="{name}"' in again.text
    assert ONE_TIME.search(again.text) is None


def test_an_admin_changes_roles_disables_resets_and_deletes_a_user(
    console: Console, boss: httpx.Client
):
    name = f"member-{secrets.token_hex(3)}"
    make_user(console.server.env, name, ["member"])
    ident = user_id(console, boss, name)
    page = boss.get(f"/ui/admin/users/{ident}")
    assert page.status_code == 200
    for button in ('id="toggle-enabled"', 'id="reset-password"', 'id="delete-user"'):
        assert button in page.text
    token = csrf_of(page.text)
    base = f"/ui/admin/users/{ident}"
    for action in ("roles", "enabled", "password", "delete"):
        refused = boss.post(f"{base}/{action}", data={"_csrf": "0" * 64})
        assert refused.status_code == 403 and "out of date" in refused.text
    roles = boss.post(f"{base}/roles", data={"_csrf": token, "role": ["viewer"]})
    assert roles.status_code == 303, roles.text
    assert ">viewer<" in boss.get(base).text.replace('id="user-roles">', ">")
    off = boss.post(f"{base}/enabled", data={"_csrf": token, "enabled": "false"})
    assert off.status_code == 303
    assert login_answer(console, name, PASSWORD).status_code == 401
    on = boss.post(f"{base}/enabled", data={"_csrf": token, "enabled": "true"})
    assert on.status_code == 303
    assert login_answer(console, name, PASSWORD).status_code == 200
    reset = boss.post(f"{base}/password", data={"_csrf": token})
    assert reset.status_code == 200, reset.text
    password = ONE_TIME.search(reset.text)
    assert password
    assert login_answer(console, name, PASSWORD).status_code == 401
    renewed = login_answer(console, name, html.unescape(password.group(1)))
    assert renewed.json()["data"]["restrictions"] == ["PASSWORD_CHANGE_REQUIRED"]
    assert ONE_TIME.search(boss.get(base).text) is None  # shown on that answer only
    # An admin cannot disable nor delete their own account (the API's 409, no button).
    own = boss.get(f"/ui/admin/users/{user_id(console, boss, 'boss')}")
    assert 'id="delete-user"' not in own.text and 'id="toggle-enabled"' not in own.text
    gone = boss.post(f"{base}/delete", data={"_csrf": token})
    assert gone.status_code == 303
    assert gone.headers["location"].startswith("/ui/admin/users?notice=")
    assert boss.get(base).status_code == 404


def test_an_admin_sees_and_revokes_another_users_api_key(console: Console, boss: httpx.Client):
    with console.api("ops") as api:
        made = api.post("/api-keys", json={"name": "ops-ci", "description": "nightly"})
        assert made.status_code == 201, made.text
        key = made.json()["data"]
    ops = user_id(console, boss, "ops")
    chooser = boss.get("/ui/admin/api-keys")
    assert chooser.status_code == 200 and f'<option value="{ops}">ops</option>' in chooser.text
    page = boss.get("/ui/admin/api-keys", params={"user_id": ops})
    assert f'data-key-id="{key["id"]}"' in page.text and "nightly" in page.text
    assert key["key"] not in page.text  # only its prefix
    revoke = f"/ui/admin/api-keys/{key['id']}/revoke"
    assert boss.post(revoke, data={"user_id": ops}).status_code == 403  # no CSRF token
    done = boss.post(revoke, data={"_csrf": csrf_of(page.text), "user_id": ops})
    assert done.status_code == 303
    assert done.headers["location"].startswith(f"/ui/admin/api-keys?user_id={ops}&notice=")
    answer = httpx.get(
        f"{console.url}/workflows", headers={"Authorization": f"Bearer {key['key']}"}
    )
    assert answer.status_code == 401
    assert "revoked" in boss.get("/ui/admin/api-keys", params={"user_id": ops}).text


def policy_form(token: str, name: str, condition: str, **extra: Any) -> dict[str, Any]:
    return {
        "_csrf": token,
        "name": name,
        "version": "1.0.0",
        "description": "made from the console",
        "enabled": "true",
        "effect": ["Deny", "Allow"],
        "resource": ["vms:*, deployments:*", ""],
        "action": ["delete", ""],
        "condition": [condition, ""],
        "rule_description": ["no deletes at night", ""],
        **extra,
    }


def test_an_admin_makes_edits_and_deletes_a_policy(console: Console, boss: httpx.Client):
    listing = boss.get("/ui/admin/policies")
    assert listing.status_code == 200
    assert ">admin_access_policy<" in listing.text and 'id="new-policy"' in listing.text
    form_page = boss.get("/ui/admin/policies/new")
    assert form_page.status_code == 200
    assert 'src="/ui/static/admin.js"' in form_page.text
    assert 'class="condition"' in form_page.text and 'id="rule-template"' in form_page.text
    token = csrf_of(form_page.text)
    name = f"night-{secrets.token_hex(3)}"
    assert boss.post("/ui/admin/policies", data=policy_form("", name, "x")).status_code == 403
    # A bad condition: the API's message, naming the rule and the column; the form as typed.
    bad = boss.post("/ui/admin/policies", data=policy_form(token, name, "time.hour >= 22 or"))
    assert bad.status_code == 422, bad.text
    assert "rules[0].condition: is not a valid expression" in html.unescape(bad.text)
    assert "time.hour &gt;= 22 or</textarea>" in bad.text
    made = boss.post(
        "/ui/admin/policies", data=policy_form(token, name, "time.hour >= 22 or time.hour < 6")
    )
    assert made.status_code == 303, made.text
    target = made.headers["location"].split("?")[0]
    shown = boss.get(target)
    assert shown.status_code == 200
    assert f'value="{name}"' in shown.text
    assert 'value="vms:*, deployments:*"' in shown.text
    assert "time.hour &gt;= 22 or time.hour &lt; 6</textarea>" in shown.text
    with api_of(console, boss) as api:
        stored = api.get(target.removeprefix("/ui/admin")).json()["data"]
    assert stored["rules"] == [
        {
            "effect": "Deny",
            "resource": ["vms:*", "deployments:*"],
            "action": ["delete"],
            "condition": "time.hour >= 22 or time.hour < 6",
            "description": "no deletes at night",
        }
    ]
    # Edit: disabled, and a second rule.
    edited = policy_form(token, name, "time.hour >= 23")
    del edited["enabled"]
    edited["resource"][1], edited["condition"][1] = "vms:*", "'member' in user.roles"
    saved = boss.post(target, data=edited)
    assert saved.status_code == 303, saved.text
    with api_of(console, boss) as api:
        stored = api.get(target.removeprefix("/ui/admin")).json()["data"]
    assert stored["enabled"] is False and len(stored["rules"]) == 2
    assert stored["rules"][1] == {
        "effect": "Allow",
        "resource": ["vms:*"],
        "action": ["*"],
        "condition": "'member' in user.roles",
    }
    gone = boss.post(f"{target}/delete", data={"_csrf": token})
    assert gone.status_code == 303
    assert boss.get(target).status_code == 404


def test_the_condition_check_answers_as_the_admin_types(console: Console, boss: httpx.Client):
    token = csrf_of(boss.get("/ui/admin/policies/new").text)
    url = "/ui/admin/policies/validate"
    good = boss.post(
        url, json={"condition": "'admin' in user.roles"}, headers={"X-CSRF-Token": token}
    )
    assert good.status_code == 200 and good.json()["valid"] is True
    bad = boss.post(url, json={"condition": "user.rol == 'x'"}, headers={"X-CSRF-Token": token})
    assert bad.json() == {
        "valid": False,
        "error": bad.json()["error"],
        "line": 1,
        "column": 1,
    }
    assert bad.json()["error"].startswith("unknown name 'user.rol'")
    refused = boss.post(url, json={"condition": "x"})  # no CSRF header
    assert refused.status_code == 403 and refused.json()["code"] == "FORBIDDEN"
    odd = boss.post(url, json={"text": "x"}, headers={"X-CSRF-Token": token})
    assert odd.status_code == 422 and odd.json()["code"] == "INVALID_INPUT"
    with console.browser() as anonymous:
        assert anonymous.post(url, json={"condition": "x"}).status_code == 401


def test_the_audit_log_is_paged_filtered_and_names_its_users(console: Console, boss: httpx.Client):
    page = boss.get("/ui/admin/audit")
    assert page.status_code == 200
    assert 'class="who">boss<' in page.text  # a username, not an id
    boss_id = user_id(console, boss, "boss")
    assert f'<option value="{boss_id}">boss</option>' in page.text
    mine = boss.get("/ui/admin/audit", params={"user_id": boss_id, "action": "auth.login"})
    rows = re.findall(r'<tr data-audit-id="[^"]+">(.*?)</tr>', mine.text, re.S)
    assert rows and all("auth.login" in row and ">boss<" in row for row in rows)
    none = boss.get(
        "/ui/admin/audit", params={"from": "2000-01-01T00:00", "to": "2000-01-02T00:00"}
    )
    assert "No record matches." in none.text and "0 records" in none.text
    odd = boss.get("/ui/admin/audit", params={"from": "yesterday"})
    assert odd.status_code == 200 and "From: a date and time" in odd.text
    with api_of(console, boss) as api:
        total = int(api.get("/audit/logs", params={"limit": 1}).headers["x-total-count"])
    for _ in range(51 - total):  # more than a page (each refused login is a record)
        assert login_answer(console, "nobody-here", "Wrong-Password-1").status_code == 401
    first = boss.get("/ui/admin/audit")
    assert 'rel="next"' in first.text and first.text.count("<tr data-audit-id=") == 50
    second = boss.get("/ui/admin/audit", params={"page": "2"})
    assert "Page 2 of" in second.text and 'rel="prev"' in second.text


@pytest.mark.parametrize(
    "path",
    ["/ui/admin/users", "/ui/admin/api-keys", "/ui/admin/policies", "/ui/admin/audit"],
)
def test_a_member_is_refused_each_admin_page(console: Console, path: str):
    with console.login("member") as http:
        refused = http.get(path)
        assert refused.status_code == 403, refused.text
        assert "FORBIDDEN" in refused.text and "<h1>Error 403</h1>" in refused.text


def test_a_viewer_reads_without_buttons_and_a_forced_form_is_refused(
    console: Console, boss: httpx.Client
):
    boss_id = user_id(console, boss, "boss")
    with console.login("watcher") as http:
        users = http.get("/ui/admin/users")
        assert users.status_code == 200 and 'id="make-user"' not in users.text
        detail = http.get(f"/ui/admin/users/{boss_id}")
        assert detail.status_code == 200
        assert 'id="reset-password"' not in detail.text and 'id="delete-user"' not in detail.text
        policies = http.get("/ui/admin/policies")
        assert policies.status_code == 200 and 'id="new-policy"' not in policies.text
        policy_id = re.search(r'data-policy-id="([^"]+)"', policies.text)
        assert policy_id
        policy = http.get(f"/ui/admin/policies/{policy_id.group(1)}")
        assert 'id="rules-table"' in policy.text and 'id="policy-form"' not in policy.text
        assert http.get("/ui/admin/policies/new").status_code == 403
        token = csrf_of(policy.text)
        name = f"x-{secrets.token_hex(3)}"
        forced = [
            http.post(
                "/ui/admin/users", data={"_csrf": token, "username": name, "email": "x@e.io"}
            ),
            http.post(f"/ui/admin/users/{boss_id}/password", data={"_csrf": token}),
            http.post(f"/ui/admin/users/{boss_id}/delete", data={"_csrf": token}),
            http.post("/ui/admin/policies", data=policy_form(token, name, "True")),
            http.post(f"/ui/admin/policies/{policy_id.group(1)}/delete", data={"_csrf": token}),
        ]
        assert [answer.status_code for answer in forced] == [403] * len(forced)
        check = http.post(
            "/ui/admin/policies/validate", json={"condition": "x"}, headers={"X-CSRF-Token": token}
        )
        assert check.status_code == 403 and check.json()["code"] == "FORBIDDEN"
    with api_of(console, boss) as api:  # nothing was forced through
        assert api.get(f"/users/{boss_id}").json()["data"]["must_change_password"] is False
        assert api.get(f"/policies/{policy_id.group(1)}").status_code == 200
