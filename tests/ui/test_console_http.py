"""The web console over HTTP (issue 17): pages, the session cookie, CSRF, the security
headers, and a viewer refused by the API's own policies."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.servers import wait_for_workflow
from tests.ui.conftest import Console, csrf_of, next_totp

SLOW_BATCH: dict[str, Any] = {
    "name": "slow",
    "parallel_limit": 1,
    "operations": [
        {
            "id": "slow",
            "type": "server_batch",
            "provider": "upcloud",
            "simulate": {"latency": 30},
            "server_configs": [{"name": "slow-1", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
        }
    ],
}
QUICK_BATCH: dict[str, Any] = {
    "name": "quick",
    "operations": [
        {
            "id": "servers",
            "type": "server_batch",
            "provider": "upcloud",
            "server_configs": [{"name": "q-1", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
        },
        {
            "id": "after",
            "type": "server_batch",
            "provider": "upcloud",
            "dependencies": [{"id": "servers", "type": "soft"}],
            "server_configs": [{"name": "q-2", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
        },
    ],
}


def submit(console: Console, body: dict[str, Any]) -> str:
    with console.api("ops") as api:
        answer = api.post("/batch/execute", json=body)
        assert answer.status_code in (200, 202), answer.text
        return str(answer.json()["data"]["batch_id"])


def wait_running(console: Console, workflow_id: str) -> None:
    with console.api("ops") as api:
        deadline = time.monotonic() + 60
        while api.get(f"/workflows/{workflow_id}").json()["data"]["status"] != "Running":
            assert time.monotonic() < deadline, "the workflow did not start"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def quick(console: Console) -> str:
    workflow_id = submit(console, QUICK_BATCH)
    with console.api("ops") as api:
        wait_for_workflow(api, workflow_id, timeout=120)
    return workflow_id


def assert_security_headers(response: httpx.Response) -> None:
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_browser_at_the_root_goes_to_the_console_an_api_client_gets_404(console):
    with console.browser() as http:
        response = http.get("/")
        assert response.status_code == 302
        assert response.headers["location"] == "/ui/"
        assert_security_headers(response)
    answer = httpx.get(f"{console.url}/", headers={"Accept": "application/json"})
    assert answer.status_code == 404
    assert answer.json()["success"] is False


def test_pages_without_a_session_go_to_the_login(console):
    with console.browser() as http:
        response = http.get("/ui/workflows?status=Failed")
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/login?next=/ui/workflows%3Fstatus%3DFailed"
        assert_security_headers(response)
        login = http.get("/ui/login")
        assert login.status_code == 200
        assert_security_headers(login)
        assert '<label for="password">' in login.text
        assert "<script>" not in login.text and "style=" not in login.text
        # The API itself still wants its credential: a cookie is not one.
        assert http.get("/workflows").status_code == 401


def test_login_sets_an_httponly_strict_session_cookie(console):
    with console.browser() as http:
        form = {"username": "ops", "password": console.accounts["ops"].password}
        response = http.post("/ui/login", data={**form, "next": "/ui/workflows?kind=batch"})
        assert response.status_code == 303
        assert response.headers["location"] == "/ui/workflows?kind=batch"
        cookies = response.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith("provisioning_session="))
        refresh = next(c for c in cookies if c.startswith("provisioning_refresh="))
        for cookie in (session, refresh):
            assert "HttpOnly" in cookie
            assert "samesite=strict" in cookie.lower()
        assert "Path=/ui" in refresh
        page = http.get("/ui/workflows")
        assert page.status_code == 200
        assert "ops" in page.text and "Log out" in page.text
        assert_security_headers(page)


def test_a_wrong_password_is_refused_and_offers_the_code_step(console):
    with console.browser() as http:
        response = http.post("/ui/login", data={"username": "ops", "password": "wrong-one-1234"})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert 'name="code"' in response.text
        assert "wrong-one-1234" not in response.text  # the password is never written back


def test_an_account_with_totp_needs_its_code(console):
    account = console.accounts["secure"]
    assert account.totp_secret
    with console.browser() as http:
        first = http.post("/ui/login", data={"username": "secure", "password": account.password})
        assert first.status_code == 401
        assert 'id="code"' in first.text
        form = {
            "username": "secure",
            "password": account.password,
            "code": next_totp(account.totp_secret),
            "step": "code",
        }
        second = http.post("/ui/login", data=form)
        assert second.status_code == 303, second.text
        assert http.get("/ui/workflows").status_code == 200


def test_next_never_leaves_the_console(console):
    with console.browser() as http:
        form = {"username": "ops", "password": console.accounts["ops"].password}
        for target in ("https://evil.example/", "//evil.example/", "/workflows"):
            response = http.post("/ui/login", data={**form, "next": target})
            assert response.headers["location"] == "/ui/workflows"


def test_the_workflow_list_filters_and_pages(console, quick):
    with console.login("ops") as http:
        page = http.get("/ui/workflows", params={"kind": "batch"})
        assert page.status_code == 200
        assert f'href="/ui/workflows/{quick}"' in page.text
        assert ">quick<" in page.text
        none = http.get("/ui/workflows", params={"status": "RolledBack", "kind": "nothing"})
        assert "No workflow matches." in none.text
        assert "0 workflows" in none.text


def test_the_workflow_page_draws_the_dag(console, quick):
    with console.login("ops") as http:
        page = http.get(f"/ui/workflows/{quick}")
        assert page.status_code == 200
        text = page.text
        assert text.count('class="node status-completed') == 2
        assert text.count('class="edge soft"') == 1  # "after" runs once "servers" ended
        assert f'data-workflow-id="{quick}"' in text
        assert 'id="cancel"' in text and 'id="rollback"' in text  # an operator's buttons
        assert_security_headers(page)


def test_task_detail_shows_params_output_and_attempts(console, quick):
    with console.api("ops") as api:
        tasks = api.get("/tasks", params={"workflow_id": quick}).json()["data"]
    task = next(t for t in tasks if t["name"].endswith("q-1"))
    with console.login("ops") as http:
        panel = http.get(f"/ui/tasks/{task['id']}", params={"fragment": "1"})
        assert panel.status_code == 200
        assert "<html" not in panel.text
        assert "1xCPU-1 GB" in panel.text  # params
        assert "Attempts" in panel.text and "<td>Completed</td>" in panel.text
        whole = http.get(f"/ui/tasks/{task['id']}")
        assert "<html" in whole.text and "Its workflow" in whole.text


def test_actions_need_the_csrf_token(console):
    workflow_id = submit(console, SLOW_BATCH)
    wait_running(console, workflow_id)
    with console.login("ops") as http:
        forged = http.post(f"/ui/workflows/{workflow_id}/cancel")
        assert forged.status_code == 403
        assert "out of date" in forged.text
        wrong = http.post(f"/ui/workflows/{workflow_id}/cancel", data={"_csrf": "0" * 64})
        assert wrong.status_code == 403
        token = csrf_of(http.get(f"/ui/workflows/{workflow_id}").text)
        done = http.post(f"/ui/workflows/{workflow_id}/cancel", data={"_csrf": token})
        assert done.status_code == 303
        assert done.headers["location"].startswith(f"/ui/workflows/{workflow_id}?notice=")
    with console.api("ops") as api:
        assert wait_for_workflow(api, workflow_id, timeout=60)["status"] == "Cancelled"


def test_a_viewer_sees_no_buttons_and_a_forced_action_is_refused(console):
    workflow_id = submit(console, SLOW_BATCH)
    wait_running(console, workflow_id)
    try:
        with console.login("watcher") as http:
            page = http.get(f"/ui/workflows/{workflow_id}")
            assert page.status_code == 200
            assert 'id="cancel"' not in page.text and 'id="rollback"' not in page.text
            assert "<button" in page.text  # the logout button only
            token = csrf_of(page.text)
            for action in ("cancel", "rollback"):
                forced = http.post(f"/ui/workflows/{workflow_id}/{action}", data={"_csrf": token})
                assert forced.status_code == 403, forced.text
                assert "FORBIDDEN" in forced.text or "not allowed" in forced.text.lower()
        with console.api("ops") as api:
            assert api.get(f"/workflows/{workflow_id}").json()["data"]["status"] == "Running"
    finally:
        with console.api("ops") as api:
            api.post(f"/workflows/{workflow_id}/cancel")


def test_logout_ends_the_session(console):
    with console.login("ops") as http:
        session = http.cookies["provisioning_session"]
        token = csrf_of(http.get("/ui/workflows").text)
        assert http.post("/ui/logout", data={"_csrf": "nope"}).status_code == 403
        out = http.post("/ui/logout", data={"_csrf": token})
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert "provisioning_session" not in http.cookies
    # The token the cookie held is revoked, not only forgotten.
    revoked = httpx.get(f"{console.url}/workflows", headers={"Authorization": f"Bearer {session}"})
    assert revoked.status_code == 401


def test_static_files_are_served_with_the_policy(console):
    with console.browser() as http:
        script = http.get("/ui/static/console.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert_security_headers(script)
        assert http.get("/ui/static/../routes.py").status_code in (400, 404)


def test_a_lapsed_access_token_is_renewed_with_the_refresh_cookie(console):
    with console.login("ops") as http:
        old = http.cookies["provisioning_session"]
        old_refresh = http.cookies["provisioning_refresh"]
        http.cookies.set("provisioning_session", "not-a-token", domain="127.0.0.1", path="/")
        page = http.get("/ui/workflows")
        assert page.status_code == 200, page.text
        renewed = [c for c in page.headers.get_list("set-cookie") if "provisioning_" in c]
        assert len(renewed) == 2 and all("HttpOnly" in c for c in renewed)
        assert http.cookies["provisioning_session"] not in (old, "not-a-token")
        assert http.cookies["provisioning_refresh"] != old_refresh
        # The spent refresh token is useless now: a stale pair means a new login.
        with console.browser() as stale:
            stale.cookies.set("provisioning_refresh", old_refresh, domain="127.0.0.1", path="/ui")
            assert stale.get("/ui/workflows").status_code == 303


def test_a_restricted_first_admin_is_sent_to_the_account_page(console):
    from tests.control_center.servers import ADMIN_PASSWORD

    with console.browser() as http:
        login = http.post("/ui/login", data={"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status_code == 303
        assert login.headers["location"] == "/ui/account"
        account = http.get("/ui/account")
        assert account.status_code == 200
        assert "Enroll an authenticator app" in account.text
        assert 'name="new_password"' not in account.text  # MFA comes first
        # The API refuses the restricted session; the page leads back to the account.
        listing = http.get("/ui/workflows")
        assert listing.status_code == 303 and listing.headers["location"] == "/ui/account"
        token = csrf_of(account.text)
        assert http.post("/ui/account/mfa/enroll").status_code == 403  # no CSRF token
        enrolled = http.post("/ui/account/mfa/enroll", data={"_csrf": token})
        assert enrolled.status_code == 200
        assert 'src="data:image/svg+xml' in enrolled.text
        assert "otpauth://totp/" in enrolled.text
        wrong = http.post("/ui/account/mfa/verify", data={"_csrf": token, "code": "000000"})
        assert wrong.status_code == 403 and "not a valid code" in wrong.text


def test_checkpoints_list_detail_and_a_viewer_s_forced_rollback(console, quick):
    with console.api("ops") as api:
        made = api.post("/rollback/checkpoints", json={"name": "http_mark", "description": "d"})
        assert made.status_code == 201, made.text
        checkpoint_id = made.json()["data"]
    with console.login("ops") as http:
        listing = http.get("/ui/checkpoints")
        assert listing.status_code == 200
        assert f'href="/ui/checkpoints/{checkpoint_id}"' in listing.text
        detail = http.get(f"/ui/checkpoints/{checkpoint_id}")
        assert "there is nothing to undo" in detail.text
        assert 'id="rollback-to"' not in detail.text  # nothing to undo: no button
        answer = http.post(
            f"/ui/checkpoints/{checkpoint_id}/rollback", data={"_csrf": csrf_of(detail.text)}
        )
        assert answer.status_code == 303
        assert answer.headers["location"].endswith("?notice=Nothing+to+undo")
    with console.login("watcher") as http:
        page = http.get(f"/ui/checkpoints/{checkpoint_id}")
        assert page.status_code == 200 and 'id="rollback-to"' not in page.text
        forced = http.post(
            f"/ui/checkpoints/{checkpoint_id}/rollback", data={"_csrf": csrf_of(page.text)}
        )
        assert forced.status_code == 403


def test_a_checkpoint_lists_the_compensations_a_rollback_would_run(console):
    with console.api("ops") as api:
        made = api.post("/rollback/checkpoints", json={"name": "undo_list"})
        assert made.status_code == 201, made.text
        checkpoint_id = made.json()["data"]
    batch = {
        **QUICK_BATCH,
        "operations": [
            {**op, "server_configs": [{**op["server_configs"][0], "name": f"u-{i}"}]}
            for i, op in enumerate(QUICK_BATCH["operations"], 1)
        ],
    }
    workflow_id = submit(console, batch)
    with console.api("ops") as api:
        wait_for_workflow(api, workflow_id, timeout=120)
        shown = api.get(f"/rollback/checkpoints/{checkpoint_id}").json()["data"]
    # Newest work first: u-2 ran after u-1 (its soft dependency), so it is undone first.
    undo = [name for name in shown["undo"] if name.startswith("undo ") and " u-" in name]
    assert len(undo) == 2 and "u-2" in undo[0] and "u-1" in undo[1], shown
    with console.login("ops") as http:
        page = http.get(f"/ui/checkpoints/{checkpoint_id}")
        assert page.status_code == 200
        listed = page.text.split('id="undo-list"', 1)[1].split("</ol>", 1)[0]
        assert listed.index(undo[0]) < listed.index(undo[1]), listed
        assert 'id="rollback-to"' in page.text


def test_a_login_posted_by_another_site_is_refused(console):
    with console.browser() as http:
        form = {"username": "ops", "password": console.accounts["ops"].password}
        forged = http.post("/ui/login", data=form, headers={"Origin": "https://evil.example"})
        assert forged.status_code == 403
        assert "set-cookie" not in forged.headers
        own = http.post("/ui/login", data=form, headers={"Origin": console.url})
        assert own.status_code == 303


def test_an_action_after_the_access_token_lapsed_renews_the_session_once(console, quick):
    with console.login("ops") as http:
        form = http.get(f"/ui/workflows/{quick}")
        token = csrf_of(form.text)
        http.cookies.set("provisioning_session", "not-a-token", domain="127.0.0.1", path="/")
        # The rollback handler and the helper it calls both open the session: the
        # refresh token is spent once (a second use would end the session). The form
        # belongs to the session, not to its lapsed access token: it is still good, and
        # the redirect carries the new pair.
        answer = http.post(f"/ui/workflows/{quick}/rollback", data={"_csrf": token})
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"].startswith("/ui/workflows/")
        assert http.cookies["provisioning_session"] != "not-a-token"
        # The session lives on: a page and the same form work without a new login.
        again = http.get(f"/ui/workflows/{quick}")
        assert again.status_code == 200, again.headers.get("location")
        assert csrf_of(again.text) == token


def test_requests_arriving_together_with_a_lapsed_token_share_one_renewal(console):
    """Two tabs (or a page and its socket) with the same lapsed pair: each presenting the
    refresh token on its own would spend it twice, which ends the session as a theft."""
    with console.login("ops") as http:
        http.cookies.set("provisioning_session", "not-a-token", domain="127.0.0.1", path="/")
        jar = dict(http.cookies.items())

        def tab() -> httpx.Response:
            with console.browser() as other:
                for name, value in jar.items():
                    other.cookies.set(name, value, domain="127.0.0.1")
                return other.get("/ui/workflows")

        with ThreadPoolExecutor(max_workers=4) as pool:
            pages = list(pool.map(lambda _: tab(), range(4)))
        assert [page.status_code for page in pages] == [200] * 4
        renewed = {page.cookies.get("provisioning_session") for page in pages}
        assert len(renewed) == 1 and None not in renewed  # one new pair, given to each
        http.cookies.clear()
        for page in pages[:1]:
            http.cookies.update(page.cookies)
        # The session was not ended as a stolen one: the new pair works.
        assert http.get("/ui/workflows").status_code == 200


def test_a_batch_page_shows_its_operations_and_progress(console, quick):
    with console.login("ops") as http:
        page = http.get(f"/ui/workflows/{quick}")
        assert page.status_code == 200
        panel = page.text[page.text.index('id="progress"') :]
        assert "2 of 2 tasks ended · 100.0%" in panel
        assert "left</span>" not in panel  # no ETA once it ended
        for operation in ("servers", "after"):
            assert f'data-operation-id="{operation}"' in panel
        # The panel alone, as the page fetches it while events come.
        fragment = http.get(f"/ui/workflows/{quick}/progress")
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert 'data-operation-id="after"' in fragment.text
        assert_security_headers(fragment)
        assert http.get("/ui/workflows/no-such-workflow/progress").status_code == 404


def test_a_running_batch_shows_an_estimate_of_the_time_left(console):
    """No estimate before a task has ended (nothing to go by), then one."""
    body = {
        "name": "estimated",
        "parallel_limit": 1,
        "operations": [
            {
                "id": "first",
                "type": "server_batch",
                "provider": "upcloud",
                "server_configs": [{"name": "e-1", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
            },
            {
                "id": "then",
                "type": "server_batch",
                "provider": "upcloud",
                "dependencies": ["first"],
                "simulate": {"latency": 60},
                "server_configs": [{"name": "e-2", "plan": "1xCPU-1 GB", "zone": "de-fra1"}],
            },
        ],
    }
    slow = submit(console, SLOW_BATCH)
    estimated = submit(console, body)
    try:
        with console.login("ops") as http, console.api("ops") as api:
            wait_running(console, slow)
            panel = http.get(f"/ui/workflows/{slow}/progress").text
            assert "0 of 1 tasks ended" in panel
            assert "time left: known once a task has ended" in panel
            deadline = time.monotonic() + 120
            while (
                api.get(f"/workflows/{estimated}").json()["data"]["task_counts"].get("Completed", 0)
                < 1
            ):
                assert time.monotonic() < deadline, "the first operation did not end"
                time.sleep(0.05)
            panel = http.get(f"/ui/workflows/{estimated}/progress").text
            assert "1 of 2 tasks ended" in panel
            assert re.search(r"about [0-9.hms]+ left", panel), panel
    finally:
        with console.api("ops") as api:
            for workflow_id in (slow, estimated):
                api.post(f"/workflows/{workflow_id}/cancel")


def test_the_events_page_is_the_logs_and_checks_its_filters(console, quick):
    with console.login("ops") as http:
        page = http.get(
            "/ui/events",
            params={"event_types": "TaskStatusChanged,WorkflowStatusChanged", "workflow_id": quick},
        )
        assert page.status_code == 200
        assert 'data-event-types="TaskStatusChanged,WorkflowStatusChanged"' in page.text
        assert f'data-workflow-id="{quick}"' in page.text
        assert '<option value="ResourceChanged">' in page.text
        assert_security_headers(page)
        # A filter that is not a list of type names is dropped, not passed on.
        odd = http.get("/ui/events", params={"event_types": "x'><script>"}).text
        assert 'data-event-types=""' in odd and "<script>" not in odd
    with console.login("watcher") as http:
        assert http.get("/ui/events").status_code == 200  # viewers read the log
    with console.login("member") as http:
        refused = http.get("/ui/events")  # members do not (the default policies)
        assert refused.status_code == 403
        assert "do not let you read the event log" in refused.text


def test_the_session_keeps_itself_alive_without_a_page_load(console):
    with console.browser() as anonymous:
        refused = anonymous.get("/ui/session")
        assert refused.status_code == 401 and refused.json()["code"] == "UNAUTHORIZED"
    with console.login("ops") as http:
        assert http.get("/ui/session").status_code == 204
        http.cookies.set("provisioning_session", "not-a-token", domain="127.0.0.1", path="/")
        renewed = http.get("/ui/session")
        assert renewed.status_code == 204
        assert http.cookies["provisioning_session"] != "not-a-token"
        assert http.get("/ui/workflows").status_code == 200


def test_the_metrics_page_samples_the_schedulers_essentials(console, quick):
    with console.login("ops") as http:
        page = http.get("/ui/metrics")
        assert page.status_code == 200 and 'data-series="p95"' in page.text
        assert_security_headers(page)
        sample = http.get("/ui/metrics/sample").json()
        assert {"running", "queued", "active_workflows", "tasks_ended"} <= set(sample)
        # What the quick batch ran is counted, and its durations are in the buckets.
        assert sample["tasks_ended"] >= 2
        durations = sample["durations"]
        assert durations["count"] >= 2 and durations["buckets"][-1][0] is None
        assert durations["buckets"][-1][1] == durations["count"]
    with console.browser() as anonymous:
        refused = anonymous.get("/ui/metrics/sample")
        assert refused.status_code == 401
        assert refused.json()["code"] == "UNAUTHORIZED" and "/ui/login" in refused.json()["error"]


def test_an_operator_makes_sees_once_and_revokes_an_api_key(console):
    with console.login("ops") as http:
        page = http.get("/ui/account/api-keys")
        assert page.status_code == 200
        token = csrf_of(page.text)
        refused = http.post("/ui/account/api-keys", data={"_csrf": "0" * 64, "name": "ci"})
        assert refused.status_code == 403
        bad = http.post(
            "/ui/account/api-keys", data={"_csrf": token, "name": "x", "expires_in_days": "soon"}
        )
        assert bad.status_code == 422 and "whole number of days" in bad.text
        made = http.post(
            "/ui/account/api-keys",
            data={"_csrf": token, "name": "ci", "description": "from CI", "expires_in_days": "30"},
        )
        assert made.status_code == 201, made.text
        key = re.search(r'<code id="new-key"[^>]*>(prov_[^<]+)</code>', made.text)
        assert key, made.text
        # The key works against the API, and is never shown again.
        answer = httpx.get(
            f"{console.url}/workflows", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert answer.status_code == 200
        listed = http.get("/ui/account/api-keys").text
        assert key.group(1) not in listed and "from CI" in listed
        key_id = re.search(r'data-key-id="([^"]+)"', listed)
        assert key_id
        gone = http.post(
            f"/ui/account/api-keys/{key_id.group(1)}/revoke", data={"_csrf": csrf_of(listed)}
        )
        assert gone.status_code == 303 and "revoked" in gone.headers["location"]
        again = httpx.get(
            f"{console.url}/workflows", headers={"Authorization": f"Bearer {key.group(1)}"}
        )
        assert again.status_code == 401
