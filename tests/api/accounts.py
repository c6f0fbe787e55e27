"""Helpers for the account tests at the orchestrator: a control center and an
orchestrator on one data directory, and users made in their database."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from tests.control_center.servers import ControlCenterProcess
from tests.pg import run_async
from tests.servers import OrchestratorProcess


@dataclass(frozen=True, slots=True)
class Pair:
    center: ControlCenterProcess
    orchestrator: OrchestratorProcess


def new_user(pair: Pair | OrchestratorProcess, roles: list[str]) -> dict[str, Any]:
    """A user with these roles and a known password, straight into the database through
    the control center's own store; the record carries its `password`."""
    from control_center.passwords import hash_password_async
    from control_center.store.records import NewUser
    from control_center.store.users import create_user

    server = pair.orchestrator if isinstance(pair, Pair) else pair
    name = f"user-{secrets.token_hex(4)}"
    password = f"Pw-{secrets.token_urlsafe(12)}-9"

    async def make() -> dict[str, Any]:
        engine = create_async_engine(server.database)
        try:
            user = await create_user(
                engine,
                NewUser(
                    username=name,
                    email=f"{name}@example.com",
                    password_hash=await hash_password_async(password),
                    roles=tuple(roles),
                ),
            )
        finally:
            await engine.dispose()
        return {"id": user.id, "username": name, "email": f"{name}@example.com"}

    return {**run_async(make), "password": password}


def login_at(
    client: httpx.Client,
    username: str,
    password: str,
    mfa_code: str | None = None,
    *,
    prefix: str = "",
) -> httpx.Response:
    body = {"username": username, "password": password}
    if mfa_code is not None:
        body["mfa_code"] = mfa_code
    return client.post(f"{prefix}/auth/login", json=body)
