"""The scheduler's rules, checked on random graphs with random failures.

Each example runs real workflows with the shipped simulated cloud, then reads the event
log back: the order and concurrency it records are what really happened. On a fresh
database of the suite's backend, through the whole service; and on the in-memory store,
the same scheduler, in a fraction of the time.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from orchestrator.attempt import Surroundings
from orchestrator.metrics import Metrics
from orchestrator.scheduler import Scheduler
from orchestrator.service import Orchestrator
from orchestrator.settings import load_settings
from orchestrator.specs import TaskSpec, WorkflowSpec, task_row
from orchestrator.store.memory import MemoryTaskStore
from orchestrator.store.models import Event, Task
from orchestrator.store.taskstore import Limits, NewWorkflow
from providers.registry import build_instances
from tests.backend import settings_env

MAX_ATTEMPTS = 2
BEHAVIOURS = ("ok", "ok", "ok", "flaky", "fails", "fails_permanently")


@st.composite
def workflows(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 14))
    tasks = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, max(0, i - 1)), unique=True, max_size=min(i, 3)))
        tasks.append(
            {
                "name": f"t{i}",
                "deps": [f"t{d}" for d in deps] if i else [],
                "behaviour": draw(st.sampled_from(BEHAVIOURS)),
                "provider": draw(st.sampled_from(["upcloud", "aws"])),
            }
        )
    return {"tasks": tasks, "parallel_limit": draw(st.integers(1, 4))}


def _params(behaviour: str) -> dict:
    simulate: dict = {"latency": 0.002}
    if behaviour == "flaky":
        simulate["fail_attempts"] = MAX_ATTEMPTS - 1
    elif behaviour == "fails":
        simulate["fail"] = True
    elif behaviour == "fails_permanently":
        simulate["fail"] = "permanent"
    return {"simulate": simulate}


def _spec(number: int, wf: dict) -> WorkflowSpec:
    return WorkflowSpec(
        kind="custom",
        name=f"w{number}",
        parallel_limit=wf["parallel_limit"],
        tasks=[
            TaskSpec(
                name=t["name"],
                provider=t["provider"],
                action="noop",
                params=_params(t["behaviour"]),
                dependencies=t["deps"],
                max_attempts=MAX_ATTEMPTS,
                retry_initial_delay=0.001,
                retry_max_delay=0.002,
            )
            for t in wf["tasks"]
        ],
    )


async def _run(tmp_path, specs: list[WorkflowSpec], global_limit: int, provider_limit: int):
    settings_ = load_settings(
        environ=settings_env(
            tmp_path,
            PROVISIONING_EXECUTOR__GLOBAL_LIMIT=str(global_limit),
            PROVISIONING_EXECUTOR__PROVIDER_LIMIT=str(provider_limit),
        )
    )
    orchestrator = Orchestrator(settings_)
    await orchestrator.start()
    try:
        ids = [await orchestrator.submit(spec) for spec in specs]
        async with asyncio.timeout(60):
            for workflow_id in ids:
                await orchestrator.scheduler.wait(workflow_id)
        async with orchestrator.engine.connect() as connection:
            events = (
                (await connection.execute(select(Event.__table__).order_by(Event.seq)))
                .mappings()
                .all()
            )
            tasks = (await connection.execute(select(Task.__table__))).mappings().all()
    finally:
        await orchestrator.stop()
    return ids, [dict(e) for e in events], [dict(t) for t in tasks]


EXAMPLES = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CASES = (
    st.lists(workflows(), min_size=1, max_size=3),
    st.integers(1, 5),
    st.integers(1, 3),
)


@settings(max_examples=25, **EXAMPLES)
@given(*CASES)
def test_random_workflows_respect_order_limits_and_failure_cascade(
    tmp_path_factory, graphs, global_limit, provider_limit
):
    tmp_path = tmp_path_factory.mktemp("exec")
    specs = [_spec(i, g) for i, g in enumerate(graphs)]
    ids, events, tasks = asyncio.run(_run(tmp_path, specs, global_limit, provider_limit))
    _check(graphs, ids, events, tasks, global_limit, provider_limit)


@pytest.mark.backend_independent
@settings(max_examples=100, **EXAMPLES)
@given(*CASES)
def test_the_same_rules_hold_on_the_in_memory_store(graphs, global_limit, provider_limit):
    specs = [_spec(i, g) for i, g in enumerate(graphs)]
    ids, events, tasks = asyncio.run(_run_in_memory(specs, global_limit, provider_limit))
    _check(graphs, ids, events, tasks, global_limit, provider_limit)


async def _run_in_memory(specs: list[WorkflowSpec], global_limit: int, provider_limit: int):
    """The scheduler over a `MemoryTaskStore`: no database, the same rules."""
    settings_ = load_settings(environ={})
    store = MemoryTaskStore(
        Limits(global_limit=global_limit, provider_limit=provider_limit),
        settings_.executor.task_defaults(),
    )
    providers = build_instances(
        {name: {"type": "sim", "latency": 0} for name in ("upcloud", "aws")}
    )
    scheduler = Scheduler(
        store,
        providers,
        settings_.executor,
        surroundings=Surroundings(Path.cwd()),
        metrics=Metrics(),
    )
    await scheduler.start()
    try:
        ids = []
        for number, spec in enumerate(specs):
            workflow_id = f"w{number}"
            ids.append(workflow_id)
            task_ids = {t.name: f"{workflow_id}-{t.name}" for t in spec.tasks}
            rows = [
                task_row(t, task_ids[t.name], workflow_id, i, store.defaults)
                for i, t in enumerate(spec.tasks)
            ]
            edges = [
                (task_ids[t.name], task_ids[d], "hard") for t in spec.tasks for d in t.dependencies
            ]
            workflow = {
                "id": workflow_id,
                "kind": spec.kind,
                "status": "Pending",
                "parallel_limit": spec.parallel_limit,
                "check_mode": False,
                "rollback_enabled": False,
                "started_at": None,
                "error": None,
            }
            await scheduler.submit(NewWorkflow(workflow, rows, edges))
        async with asyncio.timeout(60):
            for workflow_id in ids:
                await scheduler.wait(workflow_id)
    finally:
        await scheduler.stop()
    tasks = [
        {
            "id": t.id,
            "workflow_id": wf.id,
            "name": t.name,
            "provider": t.provider,
            "status": t.status,
            "attempts": t.attempts,
            "error": t.error,
        }
        for wf in store.finished.values()
        for t in wf.tasks.values()
    ]
    return ids, store.events, tasks


def _check(graphs, ids, events, tasks, global_limit, provider_limit) -> None:
    by_id = {t["id"]: t for t in tasks}
    # Every task ends in a terminal state.
    assert {t["status"] for t in tasks} <= {"Completed", "Failed", "Cancelled"}

    # Replay the log: limits are never exceeded, and nothing starts before its
    # dependencies completed.
    running: Counter[str] = Counter()
    completed: set[str] = set()
    limit_of = {wid: g["parallel_limit"] for wid, g in zip(ids, graphs, strict=True)}
    status_now: dict[str, str] = {}
    names_to_ids = defaultdict(dict)
    for t in tasks:
        names_to_ids[t["workflow_id"]][t["name"]] = t["id"]
    deps_of = {
        names_to_ids[wid][t["name"]]: [names_to_ids[wid][d] for d in t["deps"]]
        for wid, g in zip(ids, graphs, strict=True)
        for t in g["tasks"]
    }
    for event in events:
        if event["type"] != "TaskStatusChanged":
            continue
        task_id, status = event["task_id"], event["data"]["status"]
        task = by_id[task_id]
        previous = status_now.get(task_id)
        if status == "Running":
            assert all(d in completed for d in deps_of[task_id]), "started before a dependency"
            for key in ("global", task["workflow_id"], "provider:" + task["provider"]):
                running[key] += 1
            assert running["global"] <= global_limit
            assert running[task["workflow_id"]] <= limit_of[task["workflow_id"]]
            assert running["provider:" + task["provider"]] <= provider_limit
        elif previous == "Running":
            for key in ("global", task["workflow_id"], "provider:" + task["provider"]):
                running[key] -= 1
        if status == "Completed":
            completed.add(task_id)
        status_now[task_id] = status

    # Failures: exactly the tasks set to fail end Failed; a task is Cancelled exactly when
    # an ancestor failed, and its error names a failed task.
    for wid, graph in zip(ids, graphs, strict=True):
        failed_names = {t["name"] for t in graph["tasks"] if t["behaviour"].startswith("fails")}
        ancestors_failed: dict[str, bool] = {}
        for t in graph["tasks"]:  # dependencies come first in the generated order
            ancestors_failed[t["name"]] = any(
                d in failed_names or ancestors_failed[d] for d in t["deps"]
            )
        for t in graph["tasks"]:
            row = by_id[names_to_ids[wid][t["name"]]]
            if ancestors_failed[t["name"]]:
                assert row["status"] == "Cancelled", (t, row)
                named = row["error"].split("'")[1]
                assert named in failed_names or ancestors_failed.get(named)
            elif t["name"] in failed_names:
                assert row["status"] == "Failed", (t, row)
                expected = 1 if t["behaviour"] == "fails_permanently" else MAX_ATTEMPTS
                assert row["attempts"] == expected
            else:
                assert row["status"] == "Completed", (t, row)
        workflow_events = [
            e for e in events if e["type"] == "WorkflowStatusChanged" and e["workflow_id"] == wid
        ]
        final = workflow_events[-1]["data"]["status"]
        assert final == ("Failed" if failed_names else "Completed")
