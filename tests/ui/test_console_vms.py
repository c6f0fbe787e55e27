"""The console's VM pages over HTTP and its serial-console door (issue 17), on a real
QEMU guest (`os: none`: SeaBIOS, then nothing to boot) created through the API; and,
on this console without a `host` instance or a container engine, the host page's "not
configured" and the deployments page's error."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.ui.conftest import Console, csrf_of, start_console
from tests.vms import guest

# Real QEMU processes on a shared machine: a generous safety net, not a measure.
pytestmark = pytest.mark.timeout(600)
PATIENCE = 300.0


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("QEMU is not installed (./dev test installs it)")
    data = tmp_path_factory.mktemp("console-vms")
    started = start_console(data)
    try:
        yield started
    finally:
        started.server.stop()
        started.center.stop()
        guest.kill_all(data / "vms")


def wait_vm(api: httpx.Client, vm_id: str, *wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + PATIENCE
    while True:
        vm: dict[str, Any] = api.get(f"/vms/{vm_id}").json()["data"]
        if vm["status"] in wanted:
            return vm
        assert time.monotonic() < deadline, f"the VM stayed {vm['status']}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def vm(console: Console) -> dict[str, Any]:
    """A running `os: none` VM of the operator `ops`, made through the API."""
    with console.api("ops") as api:
        body = {"name": "page-vm", "cpu": 1, "memory": 64, "disk": 1, "os": "none"}
        created = api.post("/api/v1/vms", json=body)
        assert created.status_code == 201, created.text
        return wait_vm(api, created.json()["data"]["id"], "running")


def console_socket(console: Console, http: httpx.Client, vm_id: str, origin: str | None = None):  # type: ignore[no-untyped-def]
    cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
    headers = {"Cookie": cookie, "Origin": origin or console.url}
    url = console.url.replace("http://", "ws://") + f"/ui/vms/{vm_id}/console"
    return connect(url, additional_headers=headers, open_timeout=30)


def test_the_vm_list_shows_the_vm_with_its_status(console, vm):
    with console.login("ops") as http:
        page = http.get("/ui/vms")
        assert page.status_code == 200, page.text
        assert f'href="/ui/vms/{vm["id"]}">page-vm</a>' in page.text
        row = page.text.split(f'data-vm-id="{vm["id"]}"')[1].split("</tr>")[0]
        assert "status-running" in row and "64 MiB" in row and ">none<" in row
        assert 'data-kind="vm"' in page.text  # the page follows VM workflows' events
        assert '<a href="/ui/vms">VMs</a>' in page.text  # the menu
        fragment = http.get("/ui/vms?fragment=1")
        assert fragment.status_code == 200
        assert "<html" not in fragment.text and "page-vm" in fragment.text
        stopped = http.get("/ui/vms?status=stopped")
        assert "page-vm" not in stopped.text and "No virtual machine" in stopped.text


def test_a_vm_page_has_its_fields_workflow_actions_and_console(console, vm):
    with console.login("ops") as http:
        page = http.get(f"/ui/vms/{vm['id']}")
        assert page.status_code == 200, page.text
        text = page.text
        assert "<h1>page-vm</h1>" in text
        assert f'href="/ui/workflows/{vm["workflow_id"]}"' in text
        for action in ("start", "stop", "restart", "force-stop", "delete"):
            assert f'action="/ui/vms/{vm["id"]}/{action}"' in text
        # A running VM cannot be started; the destructive actions ask first.
        assert re.search(r'id="vm-start"[^>]*disabled', text)
        assert not re.search(r'id="vm-stop"[^>]*disabled', text)
        assert 'data-confirm="Delete this VM and its disk? This cannot be undone."' in text
        assert f'data-url="/ui/vms/{vm["id"]}/console"' in text
        assert '<script src="/ui/static/resources.js" defer></script>' in text
        assert http.get("/ui/static/resources.js").status_code == 200
        assert http.get("/ui/vms/nope").status_code == 404


def test_a_viewer_sees_the_vm_page_refused_and_no_buttons(console, vm):
    with console.login("watcher") as http:
        listed = http.get("/ui/vms")
        assert listed.status_code == 200
        assert "page-vm" not in listed.text  # another user's VM is out of sight
        refused = http.get(f"/ui/vms/{vm['id']}")
        assert refused.status_code == 404
        assert "VM_NOT_FOUND" in refused.text
        # A crafted action, with the viewer's own CSRF token: the API refuses it.
        token = csrf_of(listed.text)
        forced = http.post(f"/ui/vms/{vm['id']}/force-stop", data={"_csrf": token})
        assert forced.status_code in (403, 404), forced.text
    with console.api("ops") as api:
        assert api.get(f"/vms/{vm['id']}").json()["data"]["status"] == "running"


def test_an_action_without_the_csrf_token_is_refused(console, vm):
    with console.login("ops") as http:
        refused = http.post(f"/ui/vms/{vm['id']}/stop", data={})
        assert refused.status_code == 403
        assert "CSRF" in refused.text
        token = csrf_of(http.get("/ui/vms").text)
        unknown = http.post(f"/ui/vms/{vm['id']}/explode", data={"_csrf": token})
        assert unknown.status_code == 404
        # The console's socket door takes no form.
        posted = http.post(f"/ui/vms/{vm['id']}/console", data={"_csrf": token})
        assert posted.status_code in (404, 405), posted.text


def refused(console: Console, http: httpx.Client, vm_id: str, origin: str | None = None) -> int:
    """The status of a console socket's refused handshake."""
    with pytest.raises(InvalidStatus) as refusal, console_socket(console, http, vm_id, origin):
        pass
    return refusal.value.response.status_code


def read_until(socket, marker: bytes) -> bytes:  # type: ignore[no-untyped-def]
    seen = b""
    deadline = time.monotonic() + PATIENCE
    while marker not in seen:
        message = socket.recv(timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(message, bytes), message
        seen += message
    return seen


def test_the_console_door_gives_the_page_the_serial_console(console, vm):
    with console.login("ops") as http:
        with console_socket(console, http, vm["id"]) as socket:
            # SeaBIOS's own messages on the serial console (history, or live).
            assert b"SeaBIOS" in read_until(socket, b"No bootable device")
        # Another site's page, whatever cookies the browser holds, is refused; so is a
        # path that is not a VM id.
        assert refused(console, http, vm["id"], "http://evil.example") == 403
        assert refused(console, http, "..%2Fws") in (403, 404)
    # A viewer's session passes the door, and the API's own guard refuses it.
    with console.login("watcher") as http:
        assert refused(console, http, vm["id"]) == 403
        page = http.get(f"/ui/vms/{vm['id']}")
        assert page.status_code == 404 and 'id="serial"' not in page.text


def test_actions_from_the_page_run_and_the_page_follows(console, vm):
    with console.login("ops") as http:
        page = http.get(f"/ui/vms/{vm['id']}")
        token = csrf_of(page.text)
        stopped = http.post(f"/ui/vms/{vm['id']}/force-stop", data={"_csrf": token})
        assert stopped.status_code == 303, stopped.text
        assert stopped.headers["location"].startswith(f"/ui/vms/{vm['id']}?notice=")
        with console.api("ops") as api:
            wait_vm(api, vm["id"], "stopped")
        panel = http.get(f"/ui/vms/{vm['id']}?fragment=1")
        assert "status-stopped" in panel.text and "<html" not in panel.text
        assert not re.search(r'id="vm-start"[^>]*disabled', panel.text)
        started = http.post(f"/ui/vms/{vm['id']}/start", data={"_csrf": token})
        assert started.status_code == 303
        with console.api("ops") as api:
            wait_vm(api, vm["id"], "running")
        # Starting a running VM: the API's refusal, on the console's error page.
        again = http.post(f"/ui/vms/{vm['id']}/start", data={"_csrf": token})
        assert again.status_code == 409
        assert "VM_INVALID_STATE" in again.text


def test_deleting_from_the_page(console):
    with console.api("ops") as api:
        body = {"name": "doomed", "cpu": 1, "memory": 32, "disk": 1, "os": "none"}
        vm_id = api.post("/api/v1/vms", json=body).json()["data"]["id"]
        wait_vm(api, vm_id, "running")
        with console.login("ops") as http:
            token = csrf_of(http.get(f"/ui/vms/{vm_id}").text)
            deleted = http.post(f"/ui/vms/{vm_id}/delete", data={"_csrf": token})
            assert deleted.status_code == 303
            assert deleted.headers["location"].startswith("/ui/vms?notice=")
        deadline = time.monotonic() + PATIENCE
        while api.get(f"/vms/{vm_id}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_the_host_page_says_it_is_not_configured(console):
    with console.login("ops") as http:
        page = http.get("/ui/host")
        assert page.status_code == 200
        assert 'id="not-configured"' in page.text
        assert "[providers.host]" in page.text


def test_the_deployments_page_shows_the_apis_error_without_an_engine(console):
    with console.login("ops") as http:
        page = http.get("/ui/deployments")
        if page.status_code == 200:  # an engine answers on this machine's default socket
            assert "deployment" in page.text
        else:
            assert page.status_code == 503, page.text
            assert "NO_RUNTIME_AVAILABLE" in page.text
            assert "<h1>Error 503</h1>" in page.text
