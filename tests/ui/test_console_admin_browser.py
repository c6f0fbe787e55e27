"""The policy form in a real browser (issue 17): Debian's Chromium, driven by
Playwright's Python API (as `test_console_browser.py`). As the admin types a rule's
condition, the page asks the API (`POST /policies/validate`, through the console) and
shows the error and where it is, and says so when it is valid; a policy made from the
page is the API's. The screenshot goes where `test_console_browser.py` puts its own."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.ui.conftest import (
    PASSWORD,
    Account,
    Console,
    enroll_totp,
    make_user,
    next_totp,
    start_console,
)
from tests.ui.test_console_browser import SCREENSHOTS, new_page, playwright_api

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    started = start_console(tmp_path_factory.mktemp("console-admin-browser"))
    # Before Playwright's loop runs in this thread (make_user runs its own).
    make_user(started.server.env, "chief", ["admin"])
    started.accounts["chief"] = Account(
        "chief", PASSWORD, ["admin"], enroll_totp(started.center, "chief")
    )
    yield started
    started.server.stop()
    started.center.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from tests.ui.test_console_browser import CHROMIUM

    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def test_the_condition_is_checked_as_the_admin_types(console: Console, browser) -> None:  # type: ignore[no-untyped-def]
    secret = console.accounts["chief"].totp_secret
    assert secret
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    # Sign in: the password step, then the code (TOTP, as the admin role requires).
    page.goto("/ui/admin/policies")
    page.wait_for_url("**/ui/login**")
    page.get_by_label("Username or email").fill("chief")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Authentication code").fill(next_totp(secret))
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/admin/policies")
    expect(page.get_by_role("link", name="admin_access_policy")).to_be_visible()
    problems.clear()  # the password step's 401 answer, logged by Chromium

    page.get_by_role("link", name="New policy").click()
    page.wait_for_url("**/ui/admin/policies/new")
    page.get_by_label("Name").fill("weekday-operators")
    rule = page.locator("fieldset.rule").first
    rule.get_by_label("Resources").fill("servers:*")
    condition = rule.get_by_label("Condition")
    check = rule.locator(".condition-check")
    caret = rule.locator(".condition-caret")
    asked: list[str] = []
    page.on(
        "request",
        lambda r: asked.append(r.post_data or "") if r.url.endswith("/validate") else None,
    )

    # Typed key by key: the check waits for a pause, then shows the API's verdict.
    condition.press_sequentially("'operator' in user.rols", delay=20)
    expect(check).to_contain_text("unknown name 'user.rols'")
    expect(check).to_contain_text("(column 15)")
    expect(condition).to_have_attribute("aria-invalid", "true")
    expect(caret).to_be_visible()
    assert caret.inner_text().splitlines() == ["'operator' in user.rols", " " * 14 + "^"]
    assert len(asked) < len("'operator' in user.rols")  # debounced, not one per key
    page.screenshot(path=str(SCREENSHOTS / "policy-condition.png"), full_page=True)

    # Fixed, then made incomplete: valid, then the error at the end of the text.
    condition.press("Backspace")
    condition.press_sequentially("es and", delay=20)
    expect(check).to_contain_text("is not a valid expression")
    expect(check).to_contain_text("(column 29)")  # the end: something must follow
    condition.press_sequentially(" time.weekday < 5", delay=20)
    expect(check).to_have_text("✓ The condition is valid.")
    expect(condition).to_have_attribute("aria-invalid", "false")
    expect(caret).to_be_hidden()

    # A second rule, added from the page, is checked on its own.
    page.get_by_role("button", name="Add a rule").click()
    second = page.locator("fieldset.rule").nth(1)
    second.get_by_label("Resources").fill("vms:*")
    second.get_by_label("Condition").press_sequentially("len(user.roles) > 1", delay=20)
    expect(second.locator(".condition-check")).to_contain_text("a function call is not allowed")
    expect(check).to_have_text("✓ The condition is valid.")
    second.get_by_role("button", name="Remove this rule").click()
    expect(page.locator("fieldset.rule")).to_have_count(1)

    page.get_by_role("button", name="Make the policy").click()
    page.wait_for_url(lambda url: "notice=" in url)
    expect(page.locator("p.notice")).to_have_text("Policy created")
    # Opened again, the stored condition is checked at once.
    expect(page.locator("fieldset.rule").first.locator(".condition-check")).to_have_text(
        "✓ The condition is valid."
    )
    policy_id = page.url.split("/ui/admin/policies/")[1].split("?")[0]
    session = next(c for c in page.context.cookies() if c["name"] == "provisioning_session")
    headers = {"Authorization": f"Bearer {session['value']}"}
    with httpx.Client(base_url=console.url, timeout=30, headers=headers) as api:
        stored = api.get(f"/policies/{policy_id}").json()["data"]
    assert stored["name"] == "weekday-operators"
    assert stored["rules"] == [
        {
            "effect": "Allow",
            "resource": ["servers:*"],
            "action": ["*"],
            "condition": "'operator' in user.roles and time.weekday < 5",
        }
    ]
    assert not problems, problems
    page.context.close()
