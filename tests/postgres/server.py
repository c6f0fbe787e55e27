"""A real PostgreSQL server for the tests: a throwaway cluster on a free loopback port.

`initdb` and `pg_ctl` run as the `postgres` user (PostgreSQL refuses root), with the
data and socket directories owned by it. `.ci/run` installs PostgreSQL where missing.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers import free_port

BIN_DIRS = ["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/local/bin"]


def _binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(Path(d) / name) for d in BIN_DIRS if (Path(d) / name).exists()), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (see .ci/run)")
    return found


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="provisioning-pg-"))
        self.port = free_port()
        self.owner = pwd.getpwnam("postgres")
        os.chown(self.root, self.owner.pw_uid, self.owner.pw_gid)
        self.data = self.root / "data"
        self._databases = 0

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *command],
            check=True,
            capture_output=True,
            cwd=self.root,
        )

    def start(self) -> PostgresServer:
        self._as_postgres(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
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
        return self

    def stop(self) -> None:
        if self.data.exists():
            self._as_postgres(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        import asyncpg

        self._databases += 1
        name = f"provisioning_{self._databases}"

        async def create() -> None:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", database="postgres"
            )
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        asyncio.run(create())
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"
