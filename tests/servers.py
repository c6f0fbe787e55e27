"""Real services for the tests: an orchestrator process on a free loopback port, on the
suite's database (`tests/backend.py`)."""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

import httpx

from tests import backend

REPO = Path(__file__).resolve().parent.parent
PROVISIONING = str(Path(sys.executable).parent / "provisioning")


def interruptible() -> None:
    """`preexec_fn` of a process a test interrupts as Ctrl-C does (SIGINT): in a test run
    started in the background (`./dev test &`) SIGINT is ignored, and a child inherits
    that (a Python program then never sees KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


EXAMPLE_WORKSPACE = REPO / "examples" / "workspace"


#: base URL -> API key of the test operator, for helpers that only know the URL
TOKENS: dict[str, str] = {}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fast_sim_env() -> dict[str, str]:
    """Simulated clouds with little latency, so tests spend their time on real work."""
    return {
        "PROVISIONING_PROVIDERS__UPCLOUD__LATENCY": "0.01",
        "PROVISIONING_PROVIDERS__AWS__LATENCY": "0.01",
        "PROVISIONING_EXECUTOR__RETRY__INITIAL_DELAY": "0.05",
        "PROVISIONING_EXECUTOR__RETRY__MAX_DELAY": "0.2",
        # The suite makes many requests as one user; the limits have their own tests.
        "PROVISIONING_AUTH__RATE_LIMIT_GENERAL": "100000",
        "PROVISIONING_AUTH__RATE_LIMIT_BATCH": "100000",
    }


class ServiceProcess:
    """One of the apps in a subprocess on a free loopback port, with its own data
    directory and log file; `start` returns once `/health` answers.

    Its database is the data directory's (`backend.database_url`): the embedded SQLite
    file, or on PostgreSQL the data directory's own database, upgraded before it starts
    (`serve` refuses an outdated PostgreSQL schema). Processes on one data directory,
    a restart included, share it. A `PROVISIONING_DATABASE_URL` in `env` wins."""

    name = "service"
    command: list[str] = []
    port_variable = ""

    def __init__(self, data_dir: Path, env: Mapping[str, str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"{self.name}-{self.port}.log"
        #: The URL of the database it runs on.
        self.database = env.get("PROVISIONING_DATABASE_URL") or backend.database_url(data_dir)
        self.env = {
            **os.environ,
            "PROVISIONING_DATA_DIR": str(data_dir),
            self.port_variable: str(self.port),
            **({"PROVISIONING_DATABASE_URL": self.database} if backend.ON_POSTGRES else {}),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        """Called before each start, with the data directory in place."""

    def start(self, timeout: float = 120.0) -> Self:
        """`timeout` is a safety net, not a measure: a start takes about a second on an
        idle machine and much longer on one shared with other test runs."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.database.startswith("postgresql"):
            backend.upgrade(self.database)
        self.prepare()
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


class OrchestratorProcess(ServiceProcess):
    """`provisioning serve orchestrator`, reached as a test operator with an API key."""

    name = "server"
    command = [PROVISIONING, "serve", "orchestrator"]
    port_variable = "PROVISIONING_SERVER__PORT"

    def __init__(
        self,
        data_dir: Path,
        *,
        workspace: Path = EXAMPLE_WORKSPACE,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            data_dir,
            {"PROVISIONING_WORKSPACE_ROOT": str(workspace), **fast_sim_env(), **(env or {})},
        )

    def prepare(self) -> None:
        self.token = provision_operator(self.data_dir, self.env)
        TOKENS[self.url] = self.token

    def client(self) -> httpx.Client:
        """An HTTP client authenticated as the test operator."""
        return httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )


def wait_for_workflow(client: httpx.Client, workflow_id: str, timeout: float = 30.0) -> dict:
    """Poll `GET /workflows/{id}` until it ends; return the workflow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workflow = client.get(f"/workflows/{workflow_id}").json()["data"]
        if workflow["status"] in ("Completed", "Failed", "Cancelled", "RolledBack"):
            return workflow
        time.sleep(0.05)
    raise TimeoutError(f"workflow {workflow_id} did not finish in {timeout}s")


def provision_operator(data_dir: Path, env: Mapping[str, str]) -> str:
    """An `operator` user with an API key in the server's database (made once per data
    directory, through the control center's own store functions); returns the key.

    A policy of its own also lets it run commands on this host (`run` on `local:*`),
    which the default policies keep for administrators: many tests run `local` tasks."""
    return provision_user(data_dir, env, "test-operator", ["operator"], host_commands=True)


def provision_user(
    data_dir: Path,
    env: Mapping[str, str],
    username: str,
    roles: list[str],
    *,
    host_commands: bool = False,
) -> str:
    saved = data_dir / f"{username}.key"
    if saved.exists():
        return saved.read_text()
    key = asyncio.run(_provision(env, username, roles, host_commands))
    saved.write_text(key)
    return key


#: This test process's SQLite database migrated once (`_premigrated`).
_template: Path | None = None


async def _premigrated(data_dir: Path, url: str) -> None:
    """A new embedded database starts as a copy of one this test process migrated once
    (SQLite's backup API: a consistent copy, WAL or not), not by running every migration
    again for each server. Migrating a new database is what tests/unit/test_migrations.py
    and the tests that start apps on a data directory of their own check."""
    global _template
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from orchestrator.store.engine import upgrade

    target = Path(make_url(url).database or "")
    if target.exists() or not target.is_absolute():
        return
    if _template is None:
        import tempfile

        made = Path(tempfile.mkdtemp(prefix="provisioning-template-")) / "provisioning.db"
        engine = create_async_engine(f"sqlite+aiosqlite:///{made}")
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()
        _template = made
        atexit.register(shutil.rmtree, made.parent, ignore_errors=True)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with sqlite3.connect(_template) as source, sqlite3.connect(target) as copy:
        source.backup(copy)
    source.close()
    copy.close()


async def _provision(
    env: Mapping[str, str], username: str, roles: list[str], host_commands: bool
) -> str:
    from control_center.api_keys import issue_api_key
    from control_center.passwords import hash_password_async
    from control_center.policy_set import create_policy, seed_default_policies
    from control_center.store.records import NewPolicy, NewUser
    from control_center.store.users import create_user
    from orchestrator.settings import load_settings
    from orchestrator.store.engine import create_engine, upgrade

    settings = load_settings(
        environ={k: v for k, v in env.items() if k.startswith("PROVISIONING_")}
    )
    if settings.is_sqlite:
        await _premigrated(Path(settings.data_dir), settings.resolved_database_url)
    engine = create_engine(settings)
    try:
        await upgrade(engine)
        await seed_default_policies(engine)
        user = await create_user(
            engine,
            NewUser(
                username=username,
                email=f"{username}@example.com",
                password_hash=await hash_password_async(secrets.token_urlsafe(24)),
                roles=tuple(roles),
            ),
        )
        _, key = await issue_api_key(engine, user.id, "tests", "test suite", None)
        if host_commands:
            rule = {
                "effect": "Allow",
                "resource": "local:*",
                "action": ["run"],
                "condition": f"user.id == '{user.id}'",
            }
            await create_policy(
                engine,
                NewPolicy(
                    name=f"{username} runs host commands",
                    description="the test suite's operator runs local tasks",
                    rules=[rule],
                ),
            )
    finally:
        await engine.dispose()
    return key
