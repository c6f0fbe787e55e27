"""`GET /logs` over a journal file the test writes with systemd-journal-remote (from
the journal's export format): filters, paging and the count are checked against the
entries written; no journal is a 503."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_cli import run
from tests.host.journal import require_journal_tools, write_journal
from tests.servers import OrchestratorProcess

START = datetime(2025, 8, 1, 10, 0, tzinfo=UTC)
COUNT = 250
PRIORITIES = {6: "info", 4: "warning", 3: "error"}


def written() -> list[dict]:
    """What the test writes: entry i a minute after entry i-1, sshd on even i, cron on
    odd, priorities info, warning, error in turn."""
    return [
        {
            "time": START + timedelta(minutes=i),
            "unit": "sshd" if i % 2 == 0 else "cron",
            "priority": (6, 4, 3)[i % 3],
            "message": f"entry {i}",
            "pid": 1000 + i,
        }
        for i in range(COUNT)
    ]


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_journal_tools()
    target = tmp_path_factory.mktemp("journal") / "test.journal"
    write_journal(target, written())
    return target


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, journal: Path
) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(
        tmp_path_factory.mktemp("orchestrator"),
        env={
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__JOURNAL__FILE": str(journal),
            "PROVISIONING_PROVIDERS__NOJOURNAL__TYPE": "host",
            "PROVISIONING_PROVIDERS__NOJOURNAL__JOURNAL__FILE": str(journal.parent / "none"),
        },
    ).start()
    yield process
    process.stop()


def logs(client: httpx.Client, **query: object) -> dict:
    response = client.get("/api/v1/logs", params={"instance": "host", **query})
    assert response.status_code == 200, response.text
    found: dict = response.json()["data"]
    return found


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_entries_have_the_seeds_shape(client: httpx.Client) -> None:
    found = logs(client, page_size=1)
    assert (found["total_count"], found["page"], found["page_size"]) == (COUNT, 1, 1)
    last = written()[-1]
    assert found["logs"] == [
        {
            "timestamp": stamp(last["time"]),
            "priority": PRIORITIES[last["priority"]],
            "unit": last["unit"],
            "message": last["message"],
            "hostname": "journal-test",
            "pid": last["pid"],
        }
    ]


def test_filters_by_unit_priority_and_time(client: httpx.Client) -> None:
    entries = written()
    found = logs(client, service="sshd", page_size=1000)
    assert found["total_count"] == sum(e["unit"] == "sshd" for e in entries)
    assert {e["unit"] for e in found["logs"]} == {"sshd"}
    # A priority means it and the more severe ones.
    found = logs(client, priority="warning", page_size=1000)
    assert found["total_count"] == sum(e["priority"] <= 4 for e in entries)
    assert {e["priority"] for e in found["logs"]} == {"warning", "error"}
    since, until = START + timedelta(minutes=30), START + timedelta(minutes=59)
    found = logs(client, since=stamp(since), until=stamp(until), service="cron", page_size=1000)
    expected = [e for e in entries if since <= e["time"] <= until and e["unit"] == "cron"]
    assert found["total_count"] == len(expected) == 15
    assert sorted(e["message"] for e in found["logs"]) == sorted(e["message"] for e in expected)


def test_pages_cover_every_entry_once_newest_first(client: httpx.Client) -> None:
    pages = [logs(client, page=n, page_size=100) for n in (1, 2, 3, 4)]
    assert [len(p["logs"]) for p in pages] == [100, 100, 50, 0]
    assert all(p["total_count"] == COUNT for p in pages)
    messages = [e["message"] for p in pages for e in p["logs"]]
    assert messages == [f"entry {i}" for i in reversed(range(COUNT))]


@pytest.mark.parametrize(
    "query",
    [
        {"page_size": 10**9},
        {"page_size": 0},
        {"page": 0},
        {"priority": "loud"},
        {"since": "yesterday-ish"},
        {"service": "ssh d"},
        {"service": "x" * 200},
        {"service": "../etc"},
        {"since": "2025-08-02T00:00:00Z", "until": "2025-08-01T23:59:59.999999Z"},
    ],
)
def test_bad_queries_are_refused(client: httpx.Client, query: dict) -> None:
    response = client.get("/logs", params={"instance": "host", **query})
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] == "INVALID_INPUT"
    if "until" in query:
        assert "is before since" in response.json()["error"]


def test_no_journal_is_a_503_with_a_clear_code(client: httpx.Client) -> None:
    response = client.get("/logs", params={"instance": "nojournal"})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "JOURNAL_UNAVAILABLE"
    assert "does not exist" in response.json()["error"]


def test_the_cli_pages_the_journal(server: OrchestratorProcess) -> None:
    shown = run(
        "host",
        "--instance",
        "host",
        "logs",
        "--service",
        "cron",
        "--page-size",
        "5",
        url=server.url,
    )
    assert shown.returncode == 0, shown.stderr
    assert "entry 249" in shown.stdout and "page 1: 5 of 125 entries" in shown.stdout
    missing = run("host", "--instance", "nojournal", "logs", url=server.url)
    assert missing.returncode == 1 and "no journal to read" in missing.stderr
    summary = run("host", "--instance", "host", "system", "--json", url=server.url)
    assert summary.returncode == 0, summary.stderr
    assert "kernel" in json.loads(summary.stdout)
