"""The console in a real browser (issue 17): Debian's Chromium, driven by Playwright's
Python API with that executable (Playwright's own browser download is never used).

An operator logs in through the page, the example batch is submitted, its DAG page
follows it to completion without a reload, and a task's detail opens from its node.
The screenshots linked from docs/ui.md are written to docs/ui/ when
`UPDATE_SCREENSHOTS=1` is set, to a temporary folder otherwise (a test run leaves the
clone as it found it).

Determinism without timing: the server runs one task at a time, and a long "gate" batch
holds that slot while the DAG page loads (every node Pending); cancelling the gate lets
the example batch run while the page watches."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests import backend
from tests.control_center.servers import ADMIN_PASSWORD
from tests.servers import REPO, wait_for_workflow
from tests.ui.conftest import Console, next_totp, start_console
from tests.ui.test_console_http import QUICK_BATCH, SLOW_BATCH, submit, wait_running

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = (
    REPO / "docs" / "ui"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="console-screenshots-"))
)
LAPTOP = {"width": 1440, "height": 900}
YAML = {"content-type": "application/yaml"}

playwright_api = pytest.importorskip("playwright.sync_api")
# Under ./dev test (DEV_TEST), which installs it, a missing Chromium fails the tests.
if not Path(CHROMIUM).exists() and not os.environ.get("DEV_TEST"):
    pytest.skip(
        "Debian's chromium is not installed (./dev test installs it)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    started = start_console(
        tmp_path_factory.mktemp("console-browser"),
        {"PROVISIONING_EXECUTOR__GLOBAL_LIMIT": "1"},
    )
    yield started
    started.server.stop()
    started.center.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def new_page(browser, console: Console):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport=LAPTOP, base_url=console.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def log_in(page, username: str, password: str, lands: str = "/ui/workflows") -> None:  # type: ignore[no-untyped-def]
    page.goto("/")
    page.wait_for_url("**/ui/login**")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{lands}")


ADMIN_NEW_PASSWORD = "Console-Root-Passphrase-9"


def test_a_first_admin_enrolls_totp_and_changes_the_password_from_the_page(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    log_in(page, "admin", ADMIN_PASSWORD, lands="/ui/account")
    expect(page.get_by_role("status").first).to_contain_text("enroll an authenticator app")
    page.goto("/ui/workflows")  # refused by the API until then: back to the account page
    page.wait_for_url("**/ui/account")

    page.get_by_role("button", name="Enroll an authenticator app").click()
    expect(page.get_by_alt_text("QR code of the authenticator secret")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text().strip()
    page.screenshot(path=str(SCREENSHOTS / "enroll.png"), full_page=True)
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on two-factor authentication").click()
    codes = page.get_by_role("list", name="Backup codes").locator("li")
    expect(codes.first).to_be_visible()
    assert codes.count() >= 8

    page.get_by_label("Current password").fill(ADMIN_PASSWORD)
    page.get_by_label("New password", exact=True).fill(ADMIN_NEW_PASSWORD)
    page.get_by_label("New password, again").fill(ADMIN_NEW_PASSWORD)
    page.get_by_role("button", name="Change the password").click()
    expect(page.locator("p.error")).to_have_count(0)
    expect(page.get_by_role("status").first).to_contain_text("Password updated")
    page.get_by_role("link", name="Continue to the workflows").click()
    expect(page.get_by_role("heading", name="Workflows")).to_be_visible()

    # Each step is in the audit trail, as the admin's.
    with console.center.client() as http:
        login = http.post(
            "/auth/login",
            json={
                "username": "admin",
                "password": ADMIN_NEW_PASSWORD,
                "mfa_code": next_totp(secret),
            },
        )
        assert login.status_code == 200, login.text
        headers = {"Authorization": f"Bearer {login.json()['data']['token']}"}
        records = http.get("/audit/logs", params={"limit": 200}, headers=headers).json()["data"]
    actions = {r["action"] for r in records if r["user_id"] == login.json()["data"]["user"]["id"]}
    assert {"auth.login", "auth.mfa_enroll", "auth.mfa_verify", "users.change_password"} <= actions
    assert not problems, problems
    page.context.close()


def test_an_operator_watches_the_example_batch_complete_on_its_dag(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    log_in(page, "ops", console.accounts["ops"].password)
    expect(page.get_by_role("heading", name="Workflows")).to_be_visible()

    gate = submit(console, {**SLOW_BATCH, "name": "gate"})
    wait_running(console, gate)
    batches = backend.example_batches(REPO)
    with console.api("ops") as api:
        answer = api.post(
            "/batch/execute", content=(batches / "multi_cloud.yaml").read_bytes(), headers=YAML
        )
        assert answer.status_code in (200, 202), answer.text
        batch_id = answer.json()["data"]["batch_id"]
    # The list, loaded before the submissions, announces them without a reload.
    expect(page.locator("#fresh")).to_contain_text("2 new workflows")

    page.goto("/ui/workflows?kind=batch")
    expect(page.get_by_role("link", name="multi_cloud_deployment")).to_be_visible()
    page.get_by_role("link", name="multi_cloud_deployment").click()
    page.wait_for_url(f"**/ui/workflows/{batch_id}")
    nodes = page.locator("svg#dag g.node")
    expect(nodes).to_have_count(5)
    expect(page.locator("svg#dag g.node.status-pending")).to_have_count(5)
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")

    with console.api("ops") as api:
        api.post(f"/workflows/{gate}/cancel")
        assert wait_for_workflow(api, batch_id, timeout=120)["status"] == "Completed"
    expect(page.locator("svg#dag g.node.status-completed")).to_have_count(5, timeout=60_000)
    expect(page.locator("#workflow-status")).to_have_text("Completed", timeout=60_000)
    # The progress panel follows too: every task ended, each operation completed.
    expect(page.locator("#progress")).to_contain_text("5 of 5 tasks ended", timeout=60_000)
    expect(page.locator("#progress tr[data-operation-id] .badge")).to_have_text(
        ["Completed", "Completed"], timeout=60_000
    )
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    assert page.locator("button#cancel").is_disabled()
    page.screenshot(path=str(SCREENSHOTS / "dag.png"), full_page=True)

    # Keyboard: Tab to a node, Enter opens its detail.
    first = page.locator("svg#dag g.node").first
    first.focus()
    page.keyboard.press("Enter")
    detail = page.locator("#detail")
    expect(detail.get_by_role("heading", name="Attempts")).to_be_visible()
    expect(detail.locator("text=Completed").first).to_be_visible()
    # A click on a server's node shows its params and attempts with their times.
    page.locator("svg#dag g.node", has_text="web-01").first.click()
    expect(detail).to_contain_text("1xCPU-2 GB")
    expect(detail.locator("table.attempts tbody tr")).to_have_count(1)
    detail.screenshot(path=str(SCREENSHOTS / "task.png"))
    page.screenshot(path=str(SCREENSHOTS / "dag-task.png"), full_page=True)

    page.goto("/ui/workflows")
    expect(page.get_by_role("link", name="multi_cloud_deployment")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "workflows.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.goto(f"/ui/workflows/{batch_id}")
    expect(page.locator("svg#dag g.node.status-completed")).to_have_count(5)
    page.screenshot(path=str(SCREENSHOTS / "dag-dark.png"), full_page=True)
    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    assert not problems, problems
    page.context.close()


def test_a_viewer_sees_the_dag_without_buttons(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    log_in(page, "watcher", console.accounts["watcher"].password)
    page.get_by_role("link", name="multi_cloud_deployment").first.click()
    expect(page.locator("svg#dag g.node")).to_have_count(5)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Roll back")).to_have_count(0)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/ui/login")
    assert not problems, problems
    page.context.close()


def test_a_failed_task_s_error_and_a_rollback_to_a_checkpoint_from_the_page(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    batches = backend.example_batches(REPO)
    with console.api("ops") as api:
        made = api.post(
            "/rollback/checkpoints", json={"name": "before_upgrade", "description": "v1"}
        )
        assert made.status_code == 201, made.text
        answer = api.post(
            "/batch/execute",
            content=(batches / "upgrade_that_fails.yaml").read_bytes(),
            headers=YAML,
        )
        upgrade = answer.json()["data"]["batch_id"]
        assert wait_for_workflow(api, upgrade, timeout=120)["status"] in ("RolledBack", "Failed")
        extra = submit(console, QUICK_BATCH)
        assert wait_for_workflow(api, extra, timeout=120)["status"] == "Completed"

    log_in(page, "ops", console.accounts["ops"].password)
    page.goto(f"/ui/workflows/{upgrade}")
    failed = page.locator("svg#dag g.node.status-failed")
    expect(failed).to_have_count(1)
    failed.click()
    detail = page.locator("#detail")
    expect(detail.get_by_role("heading", name="Error")).to_be_visible()
    expect(detail.locator("pre.error-output")).not_to_be_empty()
    expect(detail.locator("table.attempts tbody tr")).to_have_count(2)  # max_attempts: 2
    page.screenshot(path=str(SCREENSHOTS / "failed-task.png"), full_page=True)

    page.get_by_role("link", name="Checkpoints").click()
    page.get_by_role("link", name="before_upgrade").click()
    expect(page.locator("#undo-count")).to_contain_text("will be undone")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Roll back to this checkpoint").click()
    page.wait_for_url("**/ui/workflows/*?notice=*")
    expect(page.locator("svg#dag g.node.compensation").first).to_be_visible()
    expect(page.locator("#workflow-status")).to_have_text("Completed", timeout=120_000)
    nodes = page.locator("svg#dag g.node")
    assert nodes.count() == page.locator("svg#dag g.node.compensation").count()
    page.screenshot(path=str(SCREENSHOTS / "rollback.png"), full_page=True)
    assert not problems, problems
    page.context.close()


def test_the_events_page_follows_the_log_with_its_filter(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    log_in(page, "ops", console.accounts["ops"].password)
    page.goto("/ui/events?event_types=WorkflowSubmitted,WorkflowStatusChanged")
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.__notReloaded = true")
    batch_id = submit(console, {**QUICK_BATCH, "name": "watched"})
    with console.api("ops") as api:
        assert wait_for_workflow(api, batch_id, timeout=120)["status"] == "Completed"
    rows = page.locator("#events tbody tr")
    mine = rows.filter(has=page.locator(f'a[href="/ui/workflows/{batch_id}"]'))
    expect(mine.filter(has_text="WorkflowSubmitted")).to_have_count(1, timeout=60_000)
    expect(mine.filter(has_text='"Completed"')).to_have_count(1, timeout=60_000)
    # Only the types asked for: no task's event is shown.
    expect(rows.filter(has_text="TaskStatusChanged")).to_have_count(0)
    # Newest first.
    seqs = [int(s) for s in rows.evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True)
    assert page.evaluate("window.__notReloaded === true"), "the page was reloaded"
    assert not problems, problems
    page.context.close()


def test_the_metrics_page_charts_samples_as_tasks_end(console, browser):
    page, problems = new_page(browser, console)
    expect = playwright_api.expect
    log_in(page, "ops", console.accounts["ops"].password)
    page.goto("/ui/metrics")
    expect(page.locator("#live")).to_have_text("live")
    ended = int(page.locator("#tasks-ended").inner_text())
    batch_id = submit(console, {**QUICK_BATCH, "name": "charted"})
    with console.api("ops") as api:
        assert wait_for_workflow(api, batch_id, timeout=120)["status"] == "Completed"
    # The next samples count the two tasks, chart the rate and the durations.
    expect(page.locator("#tasks-ended")).not_to_have_text(str(ended), timeout=30_000)
    assert int(page.locator("#tasks-ended").inner_text()) >= ended + 2
    throughput = page.locator('figure[data-series="throughput"] polyline')
    expect(throughput).not_to_have_attribute("points", "", timeout=30_000)
    p95 = page.locator('figure[data-series="p95"] .now')
    expect(p95).to_contain_text(" s", timeout=30_000)
    assert not problems, problems
    page.context.close()
