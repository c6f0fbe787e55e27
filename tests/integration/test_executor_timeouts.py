"""A task's timeout, enforced by the embedded executor with a timer on its runner, on
real commands and the real SQLite store."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.engine import create_engine
from orchestrator.store.models import Task

pytestmark = pytest.mark.backend_independent  # the embedded executor's own timer


def settings(root: Path) -> dict[str, str]:
    return {
        "PROVISIONING_DATA_DIR": str(root / "data"),
        "PROVISIONING_WORKSPACE_ROOT": str(root),
        "PROVISIONING_PROVIDERS__LOCAL__KILL_GRACE": "1.0",
    }


def task(script: str, timeout: float) -> TaskSpec:
    return TaskSpec(
        name="slow",
        provider="local",
        action="run",
        params={"command": "sh", "args": ["-c", script]},
        timeout=timeout,
        max_attempts=2,
        retry_initial_delay=60,
    )


async def wait_for(path: Path) -> None:
    async with asyncio.timeout(10):
        while not path.exists():
            await asyncio.sleep(0.01)


async def row(engine: AsyncEngine, workflow_id: str) -> tuple[str, int, str | None]:
    async with engine.connect() as connection:
        query = select(Task.status, Task.attempts, Task.error).where(
            Task.workflow_id == workflow_id
        )
        status, attempts, error = (await connection.execute(query)).one()
    return status, attempts, error


async def test_an_attempt_past_its_timeout_is_stopped_and_retried(command_dir: Path) -> None:
    app = Orchestrator(load_settings(environ=settings(command_dir)))
    await app.start()
    try:
        workflow_id = await app.submit(
            WorkflowSpec(kind="custom", name="w", tasks=[task("touch started; sleep 30", 0.3)])
        )
        await wait_for(command_dir / "started")
        async with asyncio.timeout(10):
            while (await row(app.engine, workflow_id))[0] == "Running":
                await asyncio.sleep(0.02)
        assert await row(app.engine, workflow_id) == ("Pending", 1, "timed out after 0.3s")
    finally:
        await app.stop()


async def test_a_timeout_while_a_stop_stops_the_task_does_not_fail_its_attempt(
    command_dir: Path,
) -> None:
    """The command ignores SIGTERM, so stopping it takes the kill grace (1 s); its
    timeout (0.3 s) falls inside: the stop decides, and the attempt is handed back, not
    counted, as any attempt a stop interrupts: it runs again at once after a restart."""
    app = Orchestrator(load_settings(environ=settings(command_dir)))
    await app.start()
    workflow_id = await app.submit(
        WorkflowSpec(
            kind="custom", name="w", tasks=[task("trap '' TERM; touch started; sleep 30", 0.3)]
        )
    )
    await wait_for(command_dir / "started")
    await app.stop()
    engine = create_engine(load_settings(environ=settings(command_dir)))  # the store, as left
    try:
        status, attempts, error = await row(engine, workflow_id)
        assert (status, attempts) == ("Pending", 0)
        assert error is not None
        assert error.startswith("handed back: worker")
    finally:
        await engine.dispose()
