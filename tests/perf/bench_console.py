#!/usr/bin/env python3
"""Web console benchmark (issue 17): prints figures, asserts nothing.

    .venv/bin/python tests/perf/bench_console.py [--tasks 1000] [--rate 200] [--repeat 3]

A control center and an orchestrator run as real processes; Debian's Chromium (through
Playwright, as in tests/ui) opens the DAG page of a workflow of `--tasks` tasks (a tree:
task i depends on task (i - 1) // 10) while a "gate" batch holds every executor slot, so the
page loads with every task Pending. Measured in the browser:

- `interactive`: from navigation to the page being usable — DOM interactive, and the
  event stream open (`#live` says live) — and a click on a node until its detail shows;
- then the gate is cancelled and the workflow runs at about `--rate` events a second
  (2 events a task; `--rate / 2` tasks in flight, each a 1 s `noop`), and the page
  follows it: the longest main-thread task (PerformanceObserver `longtask`, reported
  from 50 ms), and whether every node ends Completed without a reload (no event lost).

The server's own share is printed too: the layout of the graph (networkx) and the whole
page's answer time.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

from orchestrator.ui.dag import layout  # noqa: E402
from tests.servers import wait_for_workflow  # noqa: E402
from tests.ui.conftest import Console, start_console  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LONG_TASKS = """
window.__long = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__long.push(entry.duration);
}).observe({ type: "longtask", buffered: true });
"""


def tree(count: int) -> list[dict[str, object]]:
    return [
        {
            "name": f"t{i:05d}",
            "provider": "upcloud",
            "action": "noop",
            "params": {"simulate": {"latency": 1.0}},
            "dependencies": [f"t{(i - 1) // 10:05d}"] if i else [],
        }
        for i in range(count)
    ]


def gate(api: httpx.Client, slots: int) -> str:
    body = {
        "name": "gate",
        "parallel_limit": slots,
        "operations": [
            {
                "id": "hold",
                "type": "server_batch",
                "provider": "upcloud",
                "simulate": {"latency": 3600},
                "server_configs": [
                    {"name": f"hold-{i}", "plan": "1xCPU-1 GB", "zone": "de-fra1"}
                    for i in range(slots)
                ],
            }
        ],
    }
    gate_id = str(api.post("/batch/execute", json=body).json()["data"]["batch_id"])
    deadline = time.monotonic() + 60
    while api.get(f"/workflows/{gate_id}").json()["data"]["task_counts"].get("Running", 0) < slots:
        if time.monotonic() > deadline:
            raise TimeoutError("the gate did not take every slot")
        time.sleep(0.05)
    return gate_id


def one_run(console: Console, browser: object, tasks: int, slots: int) -> dict[str, float]:
    with console.api("ops") as api:
        api.timeout = 120
        gate_id = gate(api, slots)
        body = {"name": f"bench {tasks}", "tasks": tree(tasks), "parallel_limit": slots}
        answer = api.post("/workflows", json=body)
        assert answer.status_code == 202, answer.text
        workflow_id = str(answer.json()["data"])

        context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=console.url)  # type: ignore[attr-defined]
        page = context.new_page()
        page.add_init_script(LONG_TASKS)
        page.goto("/ui/login")
        page.get_by_label("Username or email").fill("ops")
        page.get_by_label("Password").fill(console.accounts["ops"].password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/workflows")

        began = time.perf_counter()
        page.goto(f"/ui/workflows/{workflow_id}", wait_until="commit")
        page.locator("#live[data-state=live]").wait_for()
        usable = time.perf_counter() - began
        dom = page.evaluate(
            "(() => { const n = performance.getEntriesByType('navigation')[0];"
            " return n.domInteractive - n.startTime; })()"
        )
        assert page.locator("svg#dag g.node").count() == tasks
        clicked = time.perf_counter()
        page.locator("svg#dag g.node").nth(tasks // 2).click()
        page.locator("#detail table.attempts, #detail p.muted").first.wait_for()
        detail = time.perf_counter() - clicked

        page.evaluate("window.__long = []")
        started = time.perf_counter()
        api.post(f"/workflows/{gate_id}/cancel")
        wait_for_workflow(api, workflow_id, timeout=3600)
        ran = time.perf_counter() - started
        expect(page.locator("svg#dag g.node.status-completed")).to_have_count(
            tasks, timeout=600_000
        )
        expect(page.locator("#workflow-status")).to_have_text("Completed")
        behind = time.perf_counter() - started - ran
        longest = page.evaluate("Math.max(0, ...window.__long)")
        reloaded = page.evaluate("performance.getEntriesByType('navigation').length") != 1
        context.close()

        server_page = time.perf_counter()
        with console.login("ops") as http:
            assert http.get(f"/ui/workflows/{workflow_id}").status_code == 200
        answer_time = time.perf_counter() - server_page
        tasks_json = api.get("/tasks", params={"workflow_id": workflow_id, "limit": 1000}).json()
        laid = time.perf_counter()
        layout(tasks_json["data"])
        layout_time = time.perf_counter() - laid
    return {
        "dom_interactive_s": dom / 1000,
        "usable_s": usable,
        "detail_s": detail,
        "events_per_s": 2 * tasks / ran,
        "view_lag_s": behind,
        "longest_task_ms": longest,
        "reloaded": float(reloaded),
        "server_page_s": answer_time,
        "layout_s": layout_time,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=200, help="events a second, about")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    slots = max(1, args.rate // 2)
    with tempfile.TemporaryDirectory(prefix="bench-console-") as folder:
        console = start_console(
            Path(folder),
            {
                "PROVISIONING_EXECUTOR__GLOBAL_LIMIT": str(slots),
                "PROVISIONING_EXECUTOR__PROVIDER_LIMIT": str(slots),
                "PROVISIONING_EXECUTOR__WORKER_LIMIT": str(slots),
            },
        )
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                runs = [one_run(console, browser, args.tasks, slots) for _ in range(args.repeat)]
                browser.close()
        finally:
            console.server.stop()
            console.center.stop()
    print(f"{args.tasks} tasks, {slots} in flight, {args.repeat} runs (median, worst)")
    for key in runs[0]:
        values = [run[key] for run in runs]
        worst = min(values) if key == "events_per_s" else max(values)
        print(f"  {key:18} {statistics.median(values):10.3f} {worst:10.3f}")


if __name__ == "__main__":
    main()
