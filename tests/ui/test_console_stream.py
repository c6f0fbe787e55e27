"""`/ui/ws`: the console's pages follow `/ws` with their session cookie, from this
server's own pages only, and resume with `since`."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.servers import wait_for_workflow
from tests.ui.conftest import Console
from tests.ui.test_console_http import QUICK_BATCH, submit


def stream_url(console: Console, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{console.server.port}/ui/ws?{params}"


def session_cookie(console: Console) -> str:
    with console.login("watcher") as http:
        return str(http.cookies["provisioning_session"])


def test_the_page_stream_follows_a_workflow_with_the_cookie(console):
    cookie = session_cookie(console)
    workflow_id = submit(console, QUICK_BATCH)
    with console.api("ops") as api:
        wait_for_workflow(api, workflow_id, timeout=120)
    headers = {
        "Cookie": f"provisioning_session={cookie}",
        "Origin": f"http://127.0.0.1:{console.server.port}",
    }
    seen: list[dict[str, Any]] = []
    url = stream_url(console, workflow_id=workflow_id, since="0")
    with connect(url, additional_headers=headers, open_timeout=30) as socket:
        deadline = time.monotonic() + 60
        while not any(
            m["event_type"] == "WorkflowStatusChanged" and m["data"].get("status") == "Completed"
            for m in seen
        ):
            assert time.monotonic() < deadline, seen
            seen.append(json.loads(socket.recv(timeout=30)))
    assert {m["metadata"]["workflow_id"] for m in seen} == {workflow_id}
    seqs = [m["seq"] for m in seen]
    assert seqs == sorted(seqs)
    # Resuming after the third event replays exactly what followed it.
    with connect(
        stream_url(console, workflow_id=workflow_id, since=str(seqs[2])),
        additional_headers=headers,
        open_timeout=30,
    ) as socket:
        again = [json.loads(socket.recv(timeout=30)) for _ in seqs[3:]]
    assert [m["seq"] for m in again] == seqs[3:]


@pytest.mark.parametrize(
    ("origin", "with_cookie"),
    [("http://evil.example", True), (None, True), ("same", False)],
)
def test_another_origin_or_no_session_cannot_open_it(console, origin, with_cookie):
    headers = {}
    if with_cookie:
        headers["Cookie"] = f"provisioning_session={session_cookie(console)}"
    if origin == "same":
        headers["Origin"] = f"http://127.0.0.1:{console.server.port}"
    elif origin:
        headers["Origin"] = origin
    with (
        pytest.raises(InvalidStatus) as refused,
        connect(stream_url(console), additional_headers=headers, open_timeout=30) as s,
    ):
        s.recv(timeout=5)
    assert refused.value.response.status_code == 403
