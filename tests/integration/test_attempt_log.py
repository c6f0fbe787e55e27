"""The embedded executor calls a provider without waiting for the commit of the task's
`Running` transition, and stays durable through the attempt log. These tests run real
commands on the real SQLite store; the journal's thread is held with a real job to see
what starts while a commit cannot happen."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, select

from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.attempt_log import AttemptLog
from orchestrator.store.models import Event, Task
from orchestrator.store.sqlite import SqliteTaskStore

# The attempt log belongs to the embedded (SQLite) executor.
pytestmark = pytest.mark.backend_independent


@asynccontextmanager
async def orchestrator(root: Path) -> AsyncIterator[Orchestrator]:
    settings = load_settings(
        environ={
            "PROVISIONING_DATA_DIR": str(root / "data"),
            "PROVISIONING_WORKSPACE_ROOT": str(root),
        }
    )
    app = Orchestrator(settings)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def sh(name: str, script: str, *dependencies: str) -> TaskSpec:
    return TaskSpec(
        name=name,
        provider="local",
        action="run",
        params={"command": "sh", "args": ["-c", script]},
        dependencies=list(dependencies),
        max_attempts=3,
        retry_initial_delay=0.05,
    )


async def wait_for(path: Path, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.01)


def _store(app: Orchestrator) -> SqliteTaskStore:
    store = app.scheduler.store
    assert isinstance(store, SqliteTaskStore)
    return store


@asynccontextmanager
async def journal_held(store: SqliteTaskStore) -> AsyncIterator[None]:
    """Nothing is committed inside: the journal's thread runs a job that waits."""
    entered, release = threading.Event(), threading.Event()

    def hold(_connection: Connection) -> None:
        entered.set()
        release.wait(30)

    holding = asyncio.ensure_future(store.journal.write(hold))
    await asyncio.to_thread(entered.wait, 10)
    commits = store.journal.commits
    try:
        yield
        assert store.journal.commits == commits, "committed while held"
    finally:
        release.set()
        await holding


async def test_a_task_starts_without_waiting_for_a_commit_but_a_dependent_waits(
    command_dir: Path,
) -> None:
    work = command_dir / "infra"
    work.mkdir()
    tasks = [
        sh("first", "touch first.started; while [ ! -e go ]; do sleep 0.01; done"),
        sh("independent", "touch independent.ran"),
        sh("dependent", "touch dependent.ran", "first"),
    ]
    async with orchestrator(command_dir) as app:
        workflow_id = await app.submit(
            WorkflowSpec(kind="custom", name="w", tasks=tasks, parallel_limit=1)
        )
        await wait_for(command_dir / "first.started")
        async with journal_held(_store(app)):
            (command_dir / "go").touch()
            # `first` ends; `independent` (next in line) runs with nothing committed...
            await wait_for(command_dir / "independent.ran")
            await asyncio.sleep(0.5)
            # ...but `dependent` waits for the commit of `first`'s end.
            assert not (command_dir / "dependent.ran").exists()
        await asyncio.wait_for(app.scheduler.wait(workflow_id), 10)
        assert (command_dir / "dependent.ran").exists()
        async with app.engine.connect() as connection:
            statuses = set(
                (
                    await connection.execute(
                        select(Task.status).where(Task.workflow_id == workflow_id)
                    )
                )
                .scalars()
                .all()
            )
        assert statuses == {"Completed"}


def _start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[19])


async def test_an_attempt_only_the_log_knows_of_is_stopped_counted_and_retried(
    command_dir: Path,
) -> None:
    """The state a kill -9 leaves between a command's start and the commit of its
    `Running` transition: the store says Pending, the log tells the attempt and its
    process group, and that process is still running."""
    tasks = [
        sh("holder", "touch holder.started; [ -e release ] || sleep 30"),
        # Says whether the process of the logged attempt still runs beside it.
        sh(
            "work",
            "s=$(awk '{print $3}' /proc/$(cat orphan.pid)/stat 2>/dev/null); "
            'if [ -n "$s" ] && [ "$s" != Z ]; then echo overlap; else echo ran; fi >> work.txt',
        ),
    ]
    async with orchestrator(command_dir) as first:
        workflow_id = await first.submit(
            WorkflowSpec(kind="custom", name="w", tasks=tasks, parallel_limit=1)
        )
        await wait_for(command_dir / "holder.started")
        async with first.engine.connect() as connection:
            work_id = (
                await connection.execute(
                    select(Task.id).where(Task.workflow_id == workflow_id, Task.name == "work")
                )
            ).scalar_one()
    # Stopped while `holder` ran: `work` is still Pending in the store.
    (command_dir / "release").touch()
    orphan = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (command_dir / "orphan.pid").write_text(str(orphan.pid))
    try:
        start = _start_time(orphan.pid)
        log = AttemptLog(command_dir / "data" / "attempts.log", _store(first).journal)
        log.open()
        log.started(work_id, 1)
        log.handle(
            work_id, 1, {"pid": orphan.pid, "pgid": orphan.pid, "started_between": [start, start]}
        )
        log.close()

        async with orchestrator(command_dir) as second:
            assert orphan.wait(timeout=10) == -signal.SIGTERM  # stopped before a rerun
            await asyncio.wait_for(second.scheduler.wait(workflow_id), 20)
            async with second.engine.connect() as connection:
                row = (
                    await connection.execute(
                        select(Task.status, Task.attempts).where(Task.id == work_id)
                    )
                ).one()
                events = (
                    await connection.execute(
                        select(Event.type, Event.data)
                        .where(Event.task_id == work_id)
                        .order_by(Event.seq)
                    )
                ).all()
            assert tuple(row) == ("Completed", 2)  # the logged attempt counted
            interrupted = [data for kind, data in events if kind == "TaskInterrupted"]
            assert [data["attempt"] for data in interrupted] == [1]
            # Run once (attempt 2), after the logged attempt's process was stopped.
            assert (command_dir / "work.txt").read_text() == "ran\n"
            # Emptied once recovered: only what the second process started is left.
            records = (command_dir / "data" / "attempts.log").read_text()
            assert f'"started","{work_id}",1]' not in records
            assert f'"started","{work_id}",2]' in records
    finally:
        if orphan.poll() is None:
            os.killpg(orphan.pid, signal.SIGKILL)
            orphan.wait()
