"""Rollback's rules, checked on random graphs with random failures.

Automatic rollback of a failed workflow and rollback to a checkpoint both compensate
exactly the tasks that completed (and only those), each once, dependents before their
dependencies. Checked from the store and the event log after real runs on the
simulated cloud.
"""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from orchestrator.rules import plan_compensations
from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.checkpoints import create_checkpoint
from orchestrator.store.models import Event, Task, TaskDependency
from orchestrator.store.rollbacks import undoable_tasks
from tests.backend import settings_env

FAST = {"simulate": {"latency": 0.001}}


@st.composite
def graphs(draw: st.DrawFn, failures: bool = True) -> list[dict]:
    n = draw(st.integers(1, 10))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, max(0, i - 1)), unique=True, max_size=min(i, 3)))
        fails = draw(st.booleans()) if failures else False
        tasks.append(
            {"name": f"t{i}", "deps": [f"t{d}" for d in deps] if i else [], "fails": fails}
        )
    return tasks


def _spec(name: str, graph: list[dict], *, rollback: bool, on_failure: str) -> WorkflowSpec:
    return WorkflowSpec(
        kind="batch",
        name=name,
        rollback_enabled=rollback,
        parallel_limit=3,
        tasks=[
            TaskSpec(
                name=t["name"],
                provider="upcloud",
                action="noop",
                params={"simulate": {"latency": 0.001, "fail": "permanent"}}
                if t["fails"]
                else FAST,
                dependencies=t["deps"],
                on_failure=on_failure,
                max_attempts=1,
            )
            for t in graph
        ],
    )


async def _orchestrator(tmp_path) -> Orchestrator:
    orchestrator = Orchestrator(load_settings(environ=settings_env(tmp_path)))
    await orchestrator.start()
    return orchestrator


async def _snapshot(orchestrator: Orchestrator):
    async with orchestrator.engine.connect() as connection:
        tasks = [dict(r) for r in (await connection.execute(select(Task.__table__))).mappings()]
        edges = [
            tuple(r)
            for r in await connection.execute(
                select(TaskDependency.task_id, TaskDependency.depends_on)
            )
        ]
        events = [
            dict(r)
            for r in (
                await connection.execute(select(Event.__table__).order_by(Event.seq))
            ).mappings()
        ]
    return tasks, edges, events


def _check_compensations(tasks, edges, events, expected_originals: set[str]) -> None:
    by_id = {t["id"]: t for t in tasks}
    compensations = [t for t in tasks if t["compensates"] is not None]
    targets = [c["compensates"] for c in compensations]
    # Exactly the expected originals, each compensated by one task, each once.
    assert sorted(targets) == sorted(expected_originals)
    for comp in compensations:
        assert comp["status"] == "Completed", comp
        assert by_id[comp["compensates"]]["status"] == "Completed"
        runs = [
            e for e in events if e["task_id"] == comp["id"] and e["data"].get("status") == "Running"
        ]
        assert len(runs) == 1
    # Dependents first: if B depended on A, undo B ended before undo A started.
    ended = {}
    started = {}
    for event in events:
        status = event["data"].get("status")
        if event["task_id"] and status == "Running":
            started[event["task_id"]] = event["seq"]
        if event["task_id"] and status == "Completed":
            ended[event["task_id"]] = event["seq"]
    undo_of = {c["compensates"]: c["id"] for c in compensations}
    for task_id, depends_on in edges:
        if task_id in undo_of and depends_on in undo_of:
            assert ended[undo_of[task_id]] < started[undo_of[depends_on]]


SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(graphs(), st.sampled_from(["fail", "continue", "rollback"]))
def test_a_failed_batch_compensates_exactly_what_completed(tmp_path_factory, graph, on_failure):
    async def scenario():
        orchestrator = await _orchestrator(tmp_path_factory.mktemp("rb"))
        try:
            workflow_id = await orchestrator.submit(
                _spec("b", graph, rollback=on_failure != "rollback", on_failure=on_failure)
            )
            await orchestrator.scheduler.wait(workflow_id)
            return await _snapshot(orchestrator), workflow_id
        finally:
            await orchestrator.stop()

    (tasks, edges, events), _ = asyncio.run(scenario())
    originals = [t for t in tasks if t["compensates"] is None]
    completed = {t["id"] for t in originals if t["status"] == "Completed"}
    final = [e for e in events if e["type"] == "WorkflowStatusChanged"][-1]["data"]["status"]
    if any(t["fails"] for t in graph):
        assert final == "RolledBack" if completed else final == "Failed"
        _check_compensations(tasks, edges, events, completed)
    else:
        assert final == "Completed"
        assert not [t for t in tasks if t["compensates"]]


@SETTINGS
@given(st.lists(graphs(failures=False), min_size=3, max_size=3), st.integers(1, 2))
def test_a_rollback_to_a_checkpoint_undoes_exactly_the_work_after_it(
    tmp_path_factory, workflows, before
):
    async def scenario():
        orchestrator = await _orchestrator(tmp_path_factory.mktemp("cp"))
        try:
            for index, graph in enumerate(workflows):
                if index == before:
                    checkpoint = await create_checkpoint(orchestrator.engine, "cp", "")
                workflow_id = await orchestrator.submit(
                    _spec(f"w{index}", graph, rollback=False, on_failure="fail")
                )
                await orchestrator.scheduler.wait(workflow_id)
            done = await undoable_tasks(orchestrator.engine, since=checkpoint["created_at"])
            rollback_id = await orchestrator.submit(
                WorkflowSpec(kind="rollback", name="r", tasks=plan_compensations(done))
            )
            await orchestrator.scheduler.wait(rollback_id)
            again = await undoable_tasks(orchestrator.engine, since=checkpoint["created_at"])
            return await _snapshot(orchestrator), again
        finally:
            await orchestrator.stop()

    (tasks, edges, events), again = asyncio.run(scenario())
    assert again == []  # nothing is left to undo, so nothing is undone twice
    workflow_order = sorted({t["workflow_id"] for t in tasks if t["compensates"] is None})
    after = set(workflow_order[before:])
    expected = {t["id"] for t in tasks if t["compensates"] is None and t["workflow_id"] in after}
    _check_compensations(tasks, edges, events, expected)
    # A later workflow's work is undone before an earlier one's starts to be.
    undo = {t["compensates"]: t for t in tasks if t["compensates"]}
    workflow_of = {t["id"]: t["workflow_id"] for t in tasks}
    seq = {(e["task_id"], e["data"].get("status")): e["seq"] for e in events if e["task_id"]}
    for a in undo:
        for b in undo:
            if workflow_order.index(workflow_of[a]) < workflow_order.index(workflow_of[b]):
                assert seq[(undo[b]["id"], "Completed")] < seq[(undo[a]["id"], "Running")]
