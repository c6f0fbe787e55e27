"""The console's deployment pages (issue 17) against a real container engine (podman,
`tests/containers/engine.py`): the list, a deployment's replicas with their metrics,
its logs following live through the console's socket door, and scale and delete from
the page."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from websockets.sync.client import connect

from tests.containers.conftest import engine  # noqa: F401 (the session's engine)
from tests.containers.engine import Engine
from tests.containers.test_deployments_api import AUTH, FAST
from tests.servers import wait_for_workflow
from tests.ui.conftest import Console, csrf_of, start_console

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory,
    engine: Engine,  # noqa: F811
) -> Iterator[Console]:
    started = start_console(
        tmp_path_factory.mktemp("console-deployments"),
        {
            "PROVISIONING_PROVIDERS__ENGINE__TYPE": "containers",
            "PROVISIONING_PROVIDERS__ENGINE__SOCKET": str(engine.socket),
            "PROVISIONING_PROVIDERS__ENGINE__STOP_TIMEOUT": "1",
        },
    )
    try:
        yield started
    finally:
        started.server.stop()
        started.center.stop()


@pytest.fixture(scope="module")
def deployed(console: Console, engine: Engine) -> dict[str, Any]:  # noqa: F811
    body = {
        "app_name": "page-app",
        "image": engine.image,
        "port": 8080,
        "replicas": 2,
        "env_vars": {"GREETING": "hello from the page"},
        "health_check": FAST,
        "registry_auth": AUTH,
    }
    with console.api("ops") as api:
        created = api.post("/v1/deployments", json=body)
        assert created.status_code == 201, created.text
        data: dict[str, Any] = created.json()["data"]
        assert wait_for_workflow(api, data["workflow_id"], timeout=300)["status"] == "Completed"
        status = api.get(f"/v1/deployments/{data['id']}/status").json()["data"]
    return {**data, "instances": status["instances"]}


def test_the_list_and_a_deployments_page_show_its_replicas_and_metrics(console, deployed):
    ident = deployed["id"]
    with console.login("ops") as http:
        listed = http.get("/ui/deployments")
        assert listed.status_code == 200, listed.text
        row = listed.text.split(f'data-deployment-id="{ident}"')[1].split("</tr>")[0]
        assert "page-app" in row and "status-running" in row
        assert '<a href="/ui/deployments">Deployments</a>' in listed.text
        page = http.get(f"/ui/deployments/{ident}")
        assert page.status_code == 200, page.text
        assert "2 ready of 2 desired" in page.text
        for instance in deployed["instances"]:
            row = page.text.split(f'data-replica="{instance["name"]}"')[1].split("</tr>")[0]
            assert "healthy" in row and str(instance["host_port"]) in row
            # The engine's stats: CPU, memory, network.
            assert re.search(r"<td>[0-9.]+%</td>\s*<td>[0-9.]+ (B|KiB|MiB|GiB)", row), row
        url = page.text.split("<dt>URL</dt>")[1].split("</dd>")[0]
        assert 'href="http://127.0.0.1:' in url  # a running replica's address
        for action in ("scale", "start", "stop", "delete"):
            assert f'action="/ui/deployments/{ident}/{action}"' in page.text
        assert f'data-url="/ui/deployments/{ident}/logs/stream?tail=100"' in page.text
    with console.login("watcher") as http:
        assert http.get(f"/ui/deployments/{ident}").status_code == 404  # not theirs


def test_the_logs_follow_live_through_the_console_door(console, deployed):
    ident = deployed["id"]
    first = deployed["instances"][0]
    names = {instance["name"] for instance in deployed["instances"]}
    with console.login("ops") as http:
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        url = console.url.replace("http://", "ws://") + f"/ui/deployments/{ident}/logs/stream"
        headers = {"Cookie": cookie, "Origin": console.url}
        counts: dict[str, int] = {}
        with connect(url + "?tail=1", additional_headers=headers, open_timeout=30) as socket:
            # Each replica's last line; then a request to one (httpd -v logs each) is a
            # new line from it, as it is written.
            while counts.get(first["name"], 0) < 2:
                message = msgspec.json.decode(socket.recv(timeout=120))
                assert message["type"] == "log", message
                assert set(message["data"]) == {"timestamp", "level", "message", "source"}
                source = message["data"]["source"]
                counts[source] = counts.get(source, 0) + 1
                if set(counts) == names and sum(counts.values()) == len(names):
                    port = first["host_port"]
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=10, trust_env=False)
        assert set(counts) == names


def test_the_page_follows_the_logs_in_a_browser(console, deployed):
    """Chromium: the page's script shows each replica's lines, then a new one as it is
    written (a request to a replica), without a reload."""
    from tests.ui.test_console_browser import CHROMIUM, LAPTOP, SCREENSHOTS, log_in

    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (./dev test installs it)")
    expect = playwright_api.expect
    ident, first = deployed["id"], deployed["instances"][0]
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = browser.new_context(viewport=LAPTOP, base_url=console.url).new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(str(e)))
            log_in(page, "ops", console.accounts["ops"].password)
            page.goto(f"/ui/deployments/{ident}")
            expect(page.locator("#deployment-replicas")).to_contain_text("2 ready of 2")
            expect(page.locator("#logs-state")).to_have_text("live", timeout=60_000)
            logs = page.locator("#logs")
            for instance in deployed["instances"]:
                expect(logs).to_contain_text(instance["name"], timeout=60_000)
            # httpd -v logs each request's status (not its path). The health monitor's
            # probes are requests too, answered 200: this one is the only 404.
            missing = logs.locator(".log-line", has_text="response:404")
            before = missing.count()
            marker = f"/from-the-browser-{time.monotonic_ns()}"
            httpx.get(f"http://127.0.0.1:{first['host_port']}{marker}", timeout=10, trust_env=False)
            expect(missing).to_have_count(before + 1, timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "deployment.png"), full_page=True)
            assert problems == [], problems
        finally:
            browser.close()


def test_scale_and_delete_from_the_page(console, deployed):
    ident = deployed["id"]
    with console.login("ops") as http, console.api("ops") as api:
        token = csrf_of(http.get(f"/ui/deployments/{ident}").text)
        bad = http.post(f"/ui/deployments/{ident}/scale", data={"_csrf": token, "replicas": "x"})
        assert bad.status_code == 422
        scaled = http.post(f"/ui/deployments/{ident}/scale", data={"_csrf": token, "replicas": "1"})
        assert scaled.status_code == 303, scaled.text
        # The scale's workflow (the record names it once submitted), until it ends and the
        # deployment is idle again.
        deadline = time.monotonic() + 300
        while True:
            record = api.get(f"/v1/deployments/{ident}").json()["data"]
            if record["replicas"] == 1 and record["workflow_id"] != deployed["workflow_id"]:
                ended = wait_for_workflow(api, record["workflow_id"], timeout=300)
                assert ended["status"] == "Completed", ended
                if api.get(f"/v1/deployments/{ident}").json()["data"]["status"] == "running":
                    break
            assert time.monotonic() < deadline, record
            time.sleep(0.1)
        assert "1 ready of 1 desired" in http.get(f"/ui/deployments/{ident}?fragment=1").text
        deleted = http.post(f"/ui/deployments/{ident}/delete", data={"_csrf": token})
        assert deleted.status_code == 303
        assert deleted.headers["location"].startswith("/ui/deployments?notice=")
        deadline = time.monotonic() + 300
        while api.get(f"/v1/deployments/{ident}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
