"""What a start imports (issue 20): the libraries only some commands need stay out of
`provisioning --help` and of both apps' start. Read from a fresh interpreter's
`sys.modules`; the times themselves are tests/perf/bench_startup.py's."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_independent


def loaded_by(statement: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"{statement}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return {name.partition(".")[0] for name in done.stdout.split()}


def test_the_cli_loads_no_http_client_database_or_server_to_print_its_help():
    loaded = loaded_by("import orchestrator.cli")
    assert not loaded & {"httpx", "sqlalchemy", "alembic", "litestar", "uvicorn", "yaml"}


def test_the_apps_load_no_migration_tool_to_start():
    """Alembic is imported when a migration runs, not when the schema is current."""
    loaded = loaded_by("import orchestrator.api.app, control_center.app, orchestrator.service")
    assert "alembic" not in loaded
    assert "sqlalchemy" in loaded  # the check reads something real
