"""A real PostgreSQL server for the tests: a throwaway cluster on a free loopback port.

`initdb` and `pg_ctl` run as the `postgres` user (PostgreSQL refuses root), with the
data and socket directories owned by it. `./dev test` installs PostgreSQL where missing.
The cluster runs with fsync off: it is thrown away after the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin"]


def _free_port() -> int:
    from tests.servers import free_port

    return free_port()


def run_async(work: Callable[[], Awaitable[T]]) -> T:
    """Run `work()` to its end from synchronous code, also from inside a running event
    loop (an async test or fixture), where it gets a thread and a loop of its own."""

    async def main() -> T:
        return await work()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in BIN_DIRS if (Path(d) / name).exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (./dev test does)")
    return found


class PostgresServer:
    def __init__(self, *settings: str) -> None:
        """`settings`: more `name=value` server settings (`-c`), e.g. a preloaded library."""
        self.settings = settings
        self.root = Path(tempfile.mkdtemp(prefix="provisioning-pg-"))
        self.port = _free_port()
        self.owner = pwd.getpwnam("postgres")
        os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.data = self.root / "data"
        self._numbers = itertools.count(1)

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> PostgresServer:
        self._as_postgres(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.resume()
        return self

    def pause(self) -> None:
        """Stop the server (its clients' connections cut), keeping its databases."""
        self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again, after `pause`), on the same port."""
        options = " ".join(
            [
                f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                # A throwaway cluster: no durability, room for every test server's pool.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
                "-c max_connections=400",
                *(f"-c {setting}" for setting in self.settings),
            ]
        )
        self._as_postgres(
            _binary("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(subprocess.CalledProcessError):  # (paused already)
                self._as_postgres(
                    _binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import asyncpg

        name = f"provisioning_{next(self._numbers)}"

        async def create() -> None:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres"
            )
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        run_async(create)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"
