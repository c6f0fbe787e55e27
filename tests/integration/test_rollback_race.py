"""Many rollbacks asked for at once undo each completed task at most once.

Two `serve` processes on one PostgreSQL database (SQLite allows one `serve` per
database: there, one process takes every request) run a workflow and a batch to their
end; then many rollback requests, to a checkpoint before that work and of the batch's
operations, reach both processes together. The database must then hold at most one
compensation per completed task, and every request must have had a clear answer: a
rollback started, nothing left to roll back, or 409 `ROLLBACK_IN_PROGRESS` (another
rollback is compensating that work).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from orchestrator.errors import Conflict, RollbackInProgress
from orchestrator.rules import DoneTask, plan_compensations
from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.models import Task, Workflow
from orchestrator.store.rollbacks import undoable_tasks
from tests import backend
from tests.backend import settings_env
from tests.servers import EXAMPLE_WORKSPACE, REPO, OrchestratorProcess, wait_for_workflow

BATCHES = backend.example_batches(REPO)
YAML = {"content-type": "application/yaml"}
TASKS = 20
REQUESTS_PER_PROCESS = 16


def _processes(tmp_path: Path, count: int) -> list[OrchestratorProcess]:
    """`count` orchestrators on one database, reached with one operator's API key."""
    workspace = tmp_path / "workspace"
    shutil.copytree(EXAMPLE_WORKSPACE, workspace)
    first_dir = tmp_path / "p0"
    shared = {
        "PROVISIONING_DATABASE_URL": backend.database_url(first_dir),
        # Processes with their own data dirs on one database share their keys.
        "PROVISIONING_AUTH__JWT_SECRET": "race-test-jwt-secret-" + "x" * 32,
        "PROVISIONING_AUTH__SECRETS_KEY": "race-test-secrets-key-" + "y" * 32,
    }
    processes = [OrchestratorProcess(first_dir, workspace=workspace, env=shared)]
    for n in range(1, count):
        processes.append(OrchestratorProcess(tmp_path / f"p{n}", workspace=workspace, env=shared))
    return processes


@pytest.fixture
def started(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[OrchestratorProcess]]:
    processes = _processes(tmp_path, request.param)
    try:
        processes[0].start()
        for other in processes[1:]:
            # The operator exists once, in the shared database: the others reuse its key.
            other.data_dir.mkdir(parents=True)
            key = "test-operator.key"
            shutil.copy(processes[0].data_dir / key, other.data_dir / key)
            other.start()
        yield processes
    finally:
        for process in processes:
            process.stop()


def _work(client: httpx.Client) -> tuple[str, str]:
    """A finished workflow of independent tasks and a finished batch; their ids."""
    tasks = [{"name": f"t{i:02d}", "provider": "upcloud", "action": "noop"} for i in range(TASKS)]
    workflow_id = client.post("/workflows", json={"name": "work", "tasks": tasks}).json()["data"]
    response = client.post(
        "/batch/execute", content=(BATCHES / "multi_cloud.yaml").read_bytes(), headers=YAML
    )
    assert response.status_code == 202, response.text
    batch_id = response.json()["data"]["batch_id"]
    assert wait_for_workflow(client, workflow_id)["status"] == "Completed"
    assert wait_for_workflow(client, batch_id)["status"] == "Completed"
    return workflow_id, batch_id


def _fire(processes: list[OrchestratorProcess], bodies: list[dict]) -> list[httpx.Response]:
    """Send every body at once, spread over the processes."""
    clients = [p.client() for p in processes]
    barrier = threading.Barrier(len(bodies))

    def send(index: int) -> httpx.Response:
        client = clients[index % len(clients)]
        barrier.wait(timeout=60)
        return client.post("/rollback/execute", json=bodies[index], timeout=120)

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            return list(pool.map(send, range(len(bodies))))
    finally:
        for client in clients:
            client.close()


def _check_answers(responses: list[httpx.Response]) -> list[str]:
    """Every answer is a started rollback, nothing to do, or 409 ROLLBACK_IN_PROGRESS;
    return the ids of the rollbacks started."""
    started = []
    for response in responses:
        if response.status_code == 200:
            result = response.json()["data"]
            if result["rollback_id"] is None:
                assert result["operations_executed"] == 0, result
            else:
                started.append(result["rollback_id"])
        else:
            assert response.status_code == 409, response.text
            body = response.json()
            assert body["code"] == "ROLLBACK_IN_PROGRESS", body
            assert "rollback" in body["error"], body
    return started


# Two servers, two workflows and a few dozen rollbacks: under a minute on an idle
# machine, several on one shared with other test runs; past the suite's 120 s per test
# only there.
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    "started",
    [
        pytest.param(1, id="one-process"),
        pytest.param(
            2,
            id="two-processes",
            marks=pytest.mark.skipif(
                not backend.ON_POSTGRES,
                reason="SQLite takes one `serve` per database (TEST_DATABASE=postgresql)",
            ),
        ),
    ],
    indirect=True,
)
def test_concurrent_rollbacks_compensate_each_completed_task_at_most_once(started):
    processes = started
    with processes[0].client() as client:
        checkpoint = client.post("/rollback/checkpoints", json={"name": "before"}).json()["data"]
        workflow_id, batch_id = _work(client)
        bodies = []
        for n in range(REQUESTS_PER_PROCESS * len(processes)):
            if n % 3 == 0:
                bodies.append({"checkpoint_id": checkpoint, "wait": False})
            else:
                op = "aws_taskservs" if n % 3 == 1 else "upcloud_servers"
                bodies.append({"operation_ids": [f"{batch_id}:{op}"], "wait": False})
        rollbacks = _check_answers(_fire(processes, bodies))
        assert rollbacks, "no rollback started"
        for rollback_id in rollbacks:
            assert wait_for_workflow(client, rollback_id, timeout=120)["status"] == "Completed"
        # Once they have ended, the checkpoint's rollback undoes whatever they left.
        last = client.post("/rollback/execute", json={"checkpoint_id": checkpoint}, timeout=120)
        assert last.status_code == 200, last.text
        assert last.json()["data"]["success"] is True

    rows = backend.fetch(
        processes[0].database,
        select(Task.id, Task.workflow_id, Task.compensates, Task.status).join(
            Workflow, Workflow.id == Task.workflow_id
        ),
    )
    originals = {r["id"] for r in rows if r["workflow_id"] in (workflow_id, batch_id)}
    originals -= {r["id"] for r in rows if r["compensates"] is not None}
    assert len(originals) == TASKS + 5
    compensations = [r for r in rows if r["compensates"] is not None]
    counts = Counter(r["compensates"] for r in compensations)
    twice = {task: n for task, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} task(s) compensated more than once: {twice}"
    # And each was undone.
    assert {r["compensates"] for r in compensations} == originals
    assert {r["status"] for r in compensations} == {"Completed"}


async def _orchestrator(data_dir: Path) -> Orchestrator:
    orchestrator = Orchestrator(load_settings(environ=settings_env(data_dir)))
    await orchestrator.start()
    return orchestrator


def _noop(name: str, latency: float = 0.001, dependencies: list[str] | None = None) -> TaskSpec:
    return TaskSpec(
        name=name,
        provider="upcloud",
        action="noop",
        params={"simulate": {"latency": latency}},
        dependencies=dependencies or [],
    )


def _rollback(done: list) -> WorkflowSpec:
    return WorkflowSpec(kind="rollback", name="r", tasks=plan_compensations(done))


def test_the_store_refuses_a_rollback_planned_before_another_took_the_work(tmp_path):
    """What a process selected may be stale by the time it stores its rollback: the
    store's transaction refuses it, whether the other rollback runs or has ended."""

    async def scenario() -> None:
        orchestrator = await _orchestrator(tmp_path)
        try:
            work = WorkflowSpec(
                kind="custom", name="w", tasks=[_noop("a"), _noop("b", dependencies=["a"])]
            )
            await orchestrator.scheduler.wait(await orchestrator.submit(work))
            done = await undoable_tasks(orchestrator.engine)
            assert len(done) == 2
            first = await orchestrator.submit(_rollback(done))
            with pytest.raises(RollbackInProgress):  # the first one's, pending or running
                await orchestrator.submit(_rollback(done))
            # The first may already have ended (no-op tasks are quick): then nothing is
            # left to undo; while it runs, the selection names it.
            outcome: object
            try:
                outcome = await undoable_tasks(orchestrator.engine)
            except RollbackInProgress as exc:
                outcome = str(exc)
            assert outcome == [] or first in str(outcome)
            await orchestrator.scheduler.wait(first)
            with pytest.raises(RollbackInProgress, match="has undone"):
                await orchestrator.submit(_rollback(done))
            assert await undoable_tasks(orchestrator.engine) == []
        finally:
            await orchestrator.stop()

    asyncio.run(scenario())
    rows = backend.fetch(backend.database_url(tmp_path), select(Task.compensates, Task.status))
    undone = Counter(r["compensates"] for r in rows if r["compensates"])
    assert sorted(undone.values()) == [1, 1]


async def _completed(orchestrator: Orchestrator, workflow_id: str, name: str) -> dict:
    """The task once it has completed (the safety timeout is the test's)."""
    query = select(Task.__table__).where(
        Task.workflow_id == workflow_id, Task.name == name, Task.status == "Completed"
    )
    while True:
        async with orchestrator.engine.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is not None:
            return dict(row)
        await asyncio.sleep(0.05)


def test_work_of_a_running_workflow_is_not_rolled_back_under_it(tmp_path):
    """A workflow still running may yet roll back its own work: a requested rollback
    waits for its end (409), so the two never undo one task."""

    async def scenario() -> None:
        orchestrator = await _orchestrator(tmp_path)
        try:
            work = WorkflowSpec(kind="custom", name="w", tasks=[_noop("quick"), _noop("slow", 60)])
            workflow_id = await orchestrator.submit(work)
            quick = await _completed(orchestrator, workflow_id, "quick")
            stale = [
                DoneTask(quick["id"], "quick", "upcloud", "noop", quick["params"], None, None, ())
            ]
            with pytest.raises(Conflict, match=f"workflow {workflow_id} is still running"):
                await undoable_tasks(orchestrator.engine)
            with pytest.raises(Conflict, match="still running") as refused:
                await orchestrator.submit(_rollback(stale))
            assert refused.value.code == "CONFLICT"
            await orchestrator.cancel(workflow_id)
            await orchestrator.scheduler.wait(workflow_id)
            assert len(await undoable_tasks(orchestrator.engine)) == 1
        finally:
            await orchestrator.stop()

    asyncio.run(scenario())
