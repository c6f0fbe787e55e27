"""Journals the host tests read: entries written in journald's export format, turned
into a journal file by Debian's systemd-journal-remote (no journald of the machine is
touched)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REMOTE = Path("/lib/systemd/systemd-journal-remote")


def require_journal_tools() -> None:
    """Skip without systemd-journal-remote and journalctl, except under ./dev test
    (DEV_TEST), which installs them: there the test goes on and fails."""
    missing = not REMOTE.exists() or shutil.which("journalctl") is None
    if missing and not os.environ.get("DEV_TEST"):
        pytest.skip("systemd-journal-remote and journalctl are needed (./dev test installs them)")


def export_format(entries: list[dict]) -> str:
    records = []
    for i, e in enumerate(entries):
        fields = {
            "__REALTIME_TIMESTAMP": int(e["time"].timestamp() * 1_000_000),
            "__MONOTONIC_TIMESTAMP": 1_000_000 + i,
            "_BOOT_ID": "0123456789abcdef0123456789abcdef",
            "MESSAGE": e["message"],
            "PRIORITY": e["priority"],
            "_SYSTEMD_UNIT": f"{e['unit']}.service",
            "SYSLOG_IDENTIFIER": e["unit"],
            "_HOSTNAME": "journal-test",
            "_PID": e["pid"],
        }
        records.append("".join(f"{k}={v}\n" for k, v in fields.items()))
    return "\n".join(records) + "\n"


def write_journal(path: Path, entries: list[dict], *, monotonic: int | None = None) -> None:
    """The journal file `path` holding `entries` (its export beside it, `.export`);
    `monotonic`: the first entry's monotonic time, for a later file of the same boot."""
    source = path.with_suffix(".export")
    text = export_format(entries)
    if monotonic is not None:
        text = text.replace(
            "__MONOTONIC_TIMESTAMP=1000000\n", f"__MONOTONIC_TIMESTAMP={monotonic}\n"
        )
    source.write_text(text)
    subprocess.run([str(REMOTE), f"--output={path}", str(source)], check=True, timeout=60)
