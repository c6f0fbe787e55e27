"""The console's host pages (issue 17) with a `host` instance: the system summary, the
interfaces, the disks and the Linux accounts (of a users prefix the test writes), and
the journal (a journal file the test writes with systemd-journal-remote)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.host.journal import require_journal_tools, write_journal
from tests.ui.conftest import Console, start_console

START = datetime(2025, 8, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    require_journal_tools()
    root = tmp_path_factory.mktemp("host-prefix")
    etc = root / "etc"
    etc.mkdir()
    (root / "home").mkdir()
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "pagetester:x:1500:1500:Page Tester:/home/pagetester:/bin/sh\n"
    )
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\npagetester:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\npagetester:x:1500:\n")
    (etc / "gshadow").write_text("root:*::\npagetester:!::\n")
    for name in ("shadow", "gshadow"):
        os.chmod(etc / name, 0o600)
    journal = tmp_path_factory.mktemp("journal") / "test.journal"
    entries = [
        {
            "time": START + timedelta(minutes=i),
            "unit": "sshd" if i % 2 == 0 else "cron",
            "priority": 3 if i == 7 else 6,
            "message": f"journal entry {i} <b>",
            "pid": 1000 + i,
        }
        for i in range(10)
    ]
    write_journal(journal, entries)
    started = start_console(
        tmp_path_factory.mktemp("console-host"),
        {
            "PROVISIONING_PROVIDERS__HOST__TYPE": "host",
            "PROVISIONING_PROVIDERS__HOST__USERS__PREFIX": str(root),
            "PROVISIONING_PROVIDERS__HOST__JOURNAL__FILE": str(journal),
        },
    )
    try:
        yield started
    finally:
        started.server.stop()
        started.center.stop()


def section(html: str, ident: str) -> str:
    return html.split(f'id="{ident}"')[1].split("</table>")[0].split("</dl>")[0]


def test_the_host_page_shows_the_system_interfaces_disks_and_accounts(console):
    with console.login("ops") as http:
        page = http.get("/ui/host")
        assert page.status_code == 200, page.text
        assert 'id="not-configured"' not in page.text
        assert f"<dd>{socket.gethostname()}</dd>" in section(page.text, "host-summary")
        assert os.uname().release in section(page.text, "host-summary")
        assert "<code>lo</code>" in section(page.text, "interfaces")
        assert "127.0.0.1/8" in section(page.text, "interfaces")
        # Every disk and interface the API lists (this machine's), each in the page.
        with console.api("ops") as api:
            disks = api.get("/storage/disks").json()["data"]["disks"]
            interfaces = api.get("/network/interfaces").json()["data"]["interfaces"]
        assert disks, "the API lists no disk on this machine"
        for disk in disks:
            assert f"<code>{disk['path'] or disk['name']}</code>" in section(page.text, "disks")
        for interface in interfaces:
            assert f"<code>{interface['name']}</code>" in section(page.text, "interfaces")
        users = section(page.text, "host-users")
        assert "<code>pagetester</code>" in users and "/home/pagetester" in users
        assert "<code>root</code>" in users
        assert '<a class="back" href="/ui/host/logs">The journal</a>' in page.text
        assert 'role="alert"' not in page.text  # every section answered


def test_the_journal_page_filters_and_escapes(console):
    with console.login("ops") as http:
        page = http.get("/ui/host/logs")
        assert page.status_code == 200, page.text
        assert "10 entries, newest first" in page.text
        assert "journal entry 9 &lt;b&gt;" in page.text and "<b>" not in page.text
        assert page.text.index("journal entry 9") < page.text.index("journal entry 0")
        errors = http.get("/ui/host/logs?priority=error")
        assert "1 entry, newest first" in errors.text and "journal entry 7" in errors.text
        cron = http.get("/ui/host/logs?service=cron.service")
        assert "5 entries" in cron.text and "journal entry 2 " not in cron.text


def test_a_member_is_refused_the_host_by_the_policies(console):
    with console.login("member") as http:
        page = http.get("/ui/host")  # members read none of it (the default policies)
        assert page.status_code == 403
        assert "forbidden: &#39;read&#39; on &#39;system:*&#39;" in page.text
        assert "(FORBIDDEN)" in page.text
