"""A real control-center process for the tests, on a free loopback port."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.servers import ServiceProcess

#: The JWT key the test servers sign with, so tests can forge tokens that differ in one way.
JWT_SECRET = "test-jwt-secret-" + "0123456789abcdef" * 4
ADMIN_PASSWORD = "First-Root-Password-42"


class ControlCenterProcess(ServiceProcess):
    """`python -m control_center`, with a known JWT key and first admin password."""

    name = "control-center"
    command = [sys.executable, "-m", "control_center"]
    port_variable = "PROVISIONING_CONTROL_CENTER__PORT"

    def __init__(self, data_dir: Path, *, env: Mapping[str, str] | None = None) -> None:
        super().__init__(
            data_dir,
            {
                "PROVISIONING_AUTH__JWT_SECRET": JWT_SECRET,
                "PROVISIONING_ADMIN_PASSWORD": ADMIN_PASSWORD,
                **(env or {}),
            },
        )

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)
