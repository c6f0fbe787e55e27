"""The data directory is private to the service's user: 0700, and its files 0600."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.backend import ON_POSTGRES
from tests.servers import OrchestratorProcess


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_directory_and_its_files_are_private(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    leftover = data_dir / "notes.txt"  # from an earlier version, say
    leftover.write_text("")
    leftover.chmod(0o644)
    server = OrchestratorProcess(data_dir).start()
    try:
        with server.client() as http:  # something is written: the database grows
            assert http.post("/rollback/checkpoints", json={"name": "x"}).status_code == 201
        assert _mode(data_dir) == 0o700
        files = [p for p in data_dir.iterdir() if p.is_file() and not p.name.endswith(".log")]
        assert leftover in files
        if not ON_POSTGRES:  # the embedded database is in it
            assert any(p.name.startswith("provisioning.db") for p in files)
        # Written by the test harness itself (its operator's key) are not the service's.
        service_files = [p for p in files if not p.name.endswith(".key")]
        assert {p.name: _mode(p) for p in service_files} == {p.name: 0o600 for p in service_files}
    finally:
        server.stop()
