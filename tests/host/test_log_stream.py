"""`/ws/logs` (seed 000): the latest matching entries, then what is written after the
subscription, read with `journalctl --follow` over a journal directory the test writes
into with systemd-journal-remote."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import websockets

from tests.host.journal import require_journal_tools, write_journal
from tests.host.test_logs import written
from tests.servers import OrchestratorProcess


@pytest.fixture(scope="module")
def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_journal_tools()
    found = tmp_path_factory.mktemp("journal-directory")
    write_journal(found / "first.journal", written()[:20])
    return found


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, directory: Path
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__JOURNAL__DIRECTORY": str(directory),
        },
    ).start()
    yield process
    process.stop()


async def _follow(url: str, token: str, filters: dict, then: object, count: int) -> list[dict]:
    """Subscribe with `filters`; after the first message, call `then`; collect `count`
    log messages (or up to the end or an error)."""
    got: list[dict] = []
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "payload": {"token": token}}))
        await ws.send(json.dumps({"type": "subscribe", "payload": {"filters": filters}}))
        while len([m for m in got if m["type"] == "log"]) < count:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            if got[-1]["type"] in ("end", "error"):
                break
            if len(got) == 1 and callable(then):
                await asyncio.to_thread(then)
    return got


def test_the_latest_entries_then_one_written_after_subscribing(
    server: OrchestratorProcess, directory: Path
) -> None:
    later = {
        "time": datetime.now(UTC) + timedelta(hours=1),
        "unit": "sshd",
        "priority": 3,
        "message": "written after subscribing",
        "pid": 4242,
    }
    url = f"ws://127.0.0.1:{server.port}/ws/logs"
    got = asyncio.run(
        _follow(
            url,
            server.token,
            {"unit": "sshd", "lines": 2},
            lambda: write_journal(directory / "later.journal", [later], monotonic=9_000_000),
            3,
        )
    )
    logs = [m["data"] for m in got if m["type"] == "log"]
    # The two latest sshd entries of the first file (even i below 20), oldest first.
    assert [e["message"] for e in logs[:2]] == ["entry 16", "entry 18"]
    assert logs[2]["message"] == "written after subscribing"
    assert (logs[2]["unit"], logs[2]["priority"], logs[2]["pid"]) == ("sshd", "error", 4242)


def test_without_follow_the_stream_ends_and_bad_filters_are_refused(
    server: OrchestratorProcess,
) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws/logs?token={server.token}"
    got = asyncio.run(_follow(url, server.token, {"follow": False, "priority": "error"}, None, 50))
    assert got[-1] == {"type": "end"}
    assert {m["data"]["priority"] for m in got if m["type"] == "log"} <= {
        "error",
        "critical",
        "alert",
        "emergency",
    }
    refused = asyncio.run(_follow(url, server.token, {"unit": "a/b"}, None, 1))
    assert refused[-1]["type"] == "error" and refused[-1]["code"] == "INVALID_INPUT", refused


def test_a_count_grows_with_what_is_written_and_is_made_again_when_a_file_goes(
    server: OrchestratorProcess, directory: Path
) -> None:
    """`total_count` is counted once per filter, then from its last cursor on (the
    `Counts` cache): a file written in between is counted, a file removed is noticed."""

    def count(**since: str) -> int:
        with server.client() as http:
            query = {"service": "cron", "page_size": 1, **since}
            answer = http.get("/logs", params=query)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["data"]["total_count"])

    before = count()
    assert count() == before  # from the cache: nothing after the cursor
    # journalctl takes a cursor or --since: from the cursor on, since is left out.
    soon = datetime.now(UTC) + timedelta(minutes=30)
    recent = {"since": soon.isoformat().replace("+00:00", "Z")}
    assert count(**recent) == count(**recent) == 0
    later = {
        "time": datetime.now(UTC) + timedelta(hours=2),
        "unit": "cron",
        "priority": 6,
        "message": "counted later",
        "pid": 4343,
    }
    path = directory / "counted.journal"
    try:
        write_journal(path, [later], monotonic=9_500_000)
        assert count() == before + 1
        assert count() == before + 1
        assert count(**recent) == count(**recent) == 1
    finally:
        path.unlink(missing_ok=True)
        path.with_suffix(".export").unlink(missing_ok=True)
    assert count() == before
