"""A real control-center process for the tests, on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.servers import REPO, free_port

#: The JWT key the test servers sign with, so tests can forge tokens that differ in one way.
JWT_SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4
ADMIN_PASSWORD = "First-Root-Password-42"


class ControlCenterProcess:
    """`python -m control_center` in a subprocess, with its own data directory."""

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"control-center-{self.port}.log"
        self.env = {
            **os.environ,
            "PROVISIONING_DATA_DIR": str(data_dir),
            "PROVISIONING_CONTROL_CENTER__PORT": str(self.port),
            "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
            "PROVISIONING_ADMIN_PASSWORD": ADMIN_PASSWORD,
            **(env or {}),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def database(self) -> Path:
        return self.data_dir / "provisioning.db"

    def start(self, timeout: float = 20.0) -> ControlCenterProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "control_center"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"control center exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"control center did not become healthy:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)
