"""A VM's page in a real browser (issue 17): Debian's Chromium, driven by Playwright's
Python API (`tests/ui/test_console_browser.py` says how). An operator opens the page of
an `os: none` guest made through the API and sees its serial console's output arrive
(SeaBIOS, then "No bootable device."); the VM is then force-stopped through the API and
the page follows: its status changes without a reload and the console says the VM
stopped; started again, the page reopens the console by itself. A screenshot is
written beside the others (`docs/ui/vm.png` with `UPDATE_SCREENSHOTS=1`)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.conftest import Console, start_console
from tests.ui.test_console_browser import (
    SCREENSHOTS,
    browser,  # noqa: F401 (the module's Chromium)
    log_in,
    new_page,
    playwright_api,
)
from tests.vms import guest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PATIENCE = 300.0


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("QEMU is not installed (./dev test installs it)")
    data = tmp_path_factory.mktemp("console-vm-browser")
    started = start_console(data)
    try:
        yield started
    finally:
        started.server.stop()
        started.center.stop()
        guest.kill_all(data / "vms")


def running_vm(console: Console) -> dict[str, Any]:
    with console.api("ops") as api:
        body = {"name": "browser-vm", "cpu": 1, "memory": 64, "disk": 1, "os": "none"}
        created = api.post("/api/v1/vms", json=body)
        assert created.status_code == 201, created.text
        vm_id = created.json()["data"]["id"]
        deadline = time.monotonic() + PATIENCE
        while (vm := api.get(f"/vms/{vm_id}").json()["data"])["status"] != "running":
            assert time.monotonic() < deadline, vm
            time.sleep(0.1)
    found: dict[str, Any] = vm
    return found


def test_a_vms_page_shows_its_serial_console_and_follows_its_status(
    console: Console,
    browser,  # noqa: F811 (after the console: Playwright's loop would hold the thread)
) -> None:
    expect = playwright_api.expect
    vm = running_vm(console)
    page, problems = new_page(browser, console)
    log_in(page, "ops", console.accounts["ops"].password)
    page.get_by_role("link", name="VMs").click()
    page.wait_for_url("**/ui/vms")
    expect(page.locator("#live")).to_have_text("live")
    page.get_by_role("link", name="browser-vm").click()
    page.wait_for_url(f"**/ui/vms/{vm['id']}")

    # The guest's serial console, in the page: SeaBIOS's text, the escape sequences gone.
    screen = page.locator("#serial")
    expect(screen).to_contain_text("SeaBIOS", timeout=PATIENCE * 1000)
    expect(screen).to_contain_text("No bootable device.", timeout=PATIENCE * 1000)
    expect(page.locator("#serial-state")).to_have_text("connected")
    assert "\x1b" not in screen.inner_text()
    expect(page.locator("#vm-status")).to_have_text("running")
    expect(page.locator("#vm-start")).to_be_disabled()
    page.screenshot(path=str(SCREENSHOTS / "vm.png"), full_page=True)

    # Typing reaches the console's socket (the guest boots nothing, so nothing echoes):
    # the socket stays open.
    screen.click()
    page.keyboard.type("hello")
    page.keyboard.press("Enter")
    expect(page.locator("#serial-state")).to_have_text("connected")

    # A change made elsewhere: the page follows it without a reload.
    with console.api("ops") as api:
        stopped = api.post(f"/vms/{vm['id']}/force-stop", json={"wait": True})
        assert stopped.status_code == 202, stopped.text
    expect(page.locator("#vm-status")).to_have_text("stopped", timeout=60_000)
    expect(page.locator("#vm-start")).to_be_enabled()
    expect(page.locator("#serial-state")).to_contain_text("VM_STOPPED", timeout=60_000)
    expect(page.get_by_role("button", name="Reconnect")).to_be_visible()

    # Started again elsewhere: the page sees it running and opens the console again
    # (which starts afresh: the firmware's messages of this boot, after the last one's).
    with console.api("ops") as api:
        started = api.post(f"/vms/{vm['id']}/start", json={"wait": True})
        assert started.status_code == 202, started.text
    expect(page.locator("#vm-status")).to_have_text("running", timeout=60_000)
    expect(page.locator("#serial-state")).to_have_text("connected", timeout=60_000)
    expect(screen).to_contain_text("No bootable device.", timeout=PATIENCE * 1000)
    assert problems == [], problems
    page.context.close()
