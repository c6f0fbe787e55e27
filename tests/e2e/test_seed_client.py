"""Seed 003's own Python client works against the orchestrator unchanged."""

from __future__ import annotations

import subprocess
import sys

from tests.servers import REPO


def test_the_seed_python_client_runs_the_production_servers_workflow(server):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "clients" / "seed_client.py"),
            server.url,
            server.token,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("Task ID: ")
    assert "Status: Completed" in done.stdout
