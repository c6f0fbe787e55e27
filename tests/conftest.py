"""Shared fixtures: real orchestrator processes on loopback, on the suite's database.

`TEST_DATABASE` picks the database (`sqlite`, the default, or `postgresql`;
see tests/backend.py). Tests that do not depend on it are marked `backend_independent`
and run in the SQLite pass only: the PostgreSQL pass deselects them, so nothing runs
twice for nothing. That is the modules touching no database (pure unit tests, which set
`pytestmark`), tests/postgres/, which starts a PostgreSQL server of its own, and the
real-engine domains' tests but those marked `both_stores` (`ENGINE_DOMAINS`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from tests import backend
from tests.local_commands import open_directory
from tests.servers import OrchestratorProcess

# Properties are checked, not timed: a deadline per example (200 ms by default) fails
# tests on a machine shared with another run, and speed belongs in tests/perf/.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

HERE = Path(__file__).resolve().parent
SELF_CONTAINED = [HERE / "postgres"]
#: The real-engine domains: what their tests check is the engine's side (QEMU, the
#: container engine, the host's kernel); their store side is the same door every other
#: test drives on both stores. The PostgreSQL pass runs only their tests marked
#: `both_stores`: a flow per domain through workflows, ownership and rollback.
ENGINE_DOMAINS = [HERE / "host", HERE / "containers", HERE / "vms"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest-xdist's workers get COLUMNS=80 and LINES=24, which the CLI the tests run
        # would take for a terminal's size (and cut its tables there).
        for name in ("COLUMNS", "LINES"):
            os.environ.pop(name, None)


def pytest_report_header() -> str:
    return f"test database: {backend.BACKEND} ({backend.VARIABLE})"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        folders = item.path.parents
        engine_only = any(f in folders for f in ENGINE_DOMAINS) and not item.get_closest_marker(
            "both_stores"
        )
        if engine_only or any(folder in folders for folder in SELF_CONTAINED):
            item.add_marker(pytest.mark.backend_independent)
    if not backend.ON_POSTGRES:
        return
    deselected = [item for item in items if item.get_closest_marker("backend_independent")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("backend_independent")]


@pytest.fixture(scope="session", autouse=True)
def test_database() -> Iterator[str]:
    """On PostgreSQL, the session's server starts before the first test and stops after
    the last one."""
    if backend.ON_POSTGRES:
        backend.postgres()
    yield backend.BACKEND
    backend.stop_postgres()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrchestratorProcess]:
    process = OrchestratorProcess(tmp_path_factory.mktemp("orchestrator")).start()
    yield process
    process.stop()


@pytest.fixture
def client(server: OrchestratorProcess) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def command_dir() -> Iterator[Path]:
    """A directory that `local` commands may write in (they do not run as the tests'
    user: tests/local_commands.py), removed at the end."""
    with open_directory() as path:
        yield path
