"""The app in-process: the first start creates `admin` once, with a password shown once."""

from __future__ import annotations

import re

from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from control_center.app import create_app
from control_center.store import users
from orchestrator.settings import AuthSettings, Settings
from orchestrator.store.engine import create_engine
from tests.backend import settings_fields

PRINTED = re.compile(r"one-time password (\S+)")


def settings_in(tmp_path) -> Settings:
    return Settings(**settings_fields(tmp_path), auth=AuthSettings(jwt_secret="k" * 64))


async def test_the_first_start_prints_a_one_time_password_once(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PROVISIONING_ADMIN_PASSWORD", raising=False)
    settings = settings_in(tmp_path)
    async with AsyncTestClient(create_app(settings)) as client:
        password = PRINTED.search(capsys.readouterr().out).group(1)
        login = {"username": "admin", "password": password}
        session = (await client.post("/auth/login", json=login)).json()["data"]
        assert "PASSWORD_CHANGE_REQUIRED" in session["restrictions"]
    async with AsyncTestClient(create_app(settings)) as client:
        assert "one-time password" not in capsys.readouterr().out
        assert (await client.post("/auth/login", json=login)).status_code == 200


async def test_an_engine_given_to_the_app_is_used_and_left_open(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROVISIONING_ADMIN_PASSWORD", "Given-Root-Pass-12")
    settings = settings_in(tmp_path)
    if settings.is_sqlite:
        engine = create_engine(settings)
    else:
        # The test client runs the app on an event loop of its own (in a thread), and an
        # asyncpg connection belongs to the loop that opened it: none is pooled across.
        engine = create_async_engine(settings.resolved_database_url, poolclass=NullPool)
    try:
        async with AsyncTestClient(create_app(settings, engine)) as client:
            login = {"username": "admin", "password": "Given-Root-Pass-12"}
            assert (await client.post("/auth/login", json=login)).status_code == 200
        assert "Given-Root-Pass-12" not in capsys.readouterr().out
        assert await users.count_users(engine) == 1
    finally:
        await engine.dispose()
