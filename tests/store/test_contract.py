"""The `TaskStore` contract, on every store: the in-memory one and the embedded SQLite
one in the SQLite pass, PostgreSQL in the PostgreSQL pass (tests/backend.py).

Driven by hand, as the scheduler drives a store: claim, end, cancel. Each store applies
the rules of `orchestrator/rules.py`; these tests say what those decisions look like
from outside, the same for all three.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.ids import new_id
from orchestrator.rules import Outcome
from orchestrator.specs import TaskDefaults, TaskSpec, task_row
from orchestrator.store.memory import MemoryTaskStore
from orchestrator.store.taskstore import AttemptEnd, Claim, Limits, NewWorkflow, TaskStore
from orchestrator.store.workflows import get_workflow, tasks_of
from tests.backend import ON_POSTGRES, settings_env

BACKENDS = ["postgres"] if ON_POSTGRES else ["memory", "sqlite"]
LIMITS = Limits(global_limit=4, provider_limit=3, provider_limits={"narrow": 1})
DEFAULTS = TaskDefaults(max_attempts=2, retry_initial_delay=0.05, retry_max_delay=0.05, jitter=0)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskStore]:
    made: TaskStore
    if request.param == "memory":
        made = MemoryTaskStore(LIMITS, DEFAULTS)
    else:
        from orchestrator.settings import load_settings
        from orchestrator.store.engine import create_engine, create_writer_engine, upgrade

        settings = load_settings(environ=settings_env(tmp_path / "data"))
        engine = create_engine(settings)
        await upgrade(engine)
        if request.param == "sqlite":
            from orchestrator.store.sqlite import SqliteTaskStore

            made = SqliteTaskStore(
                engine,
                create_writer_engine(settings),
                LIMITS,
                DEFAULTS,
                data_dir=Path(settings.data_dir),
            )
        else:
            from orchestrator.store.postgres import PostgresTaskStore

            made = PostgresTaskStore(
                engine, LIMITS, DEFAULTS, worker_id="host/test", lease=30, poll_interval=0.2
            )
    assert await made.open() == []
    await made.recovered()
    try:
        yield made
    finally:
        await made.close()
        if request.param != "memory":
            await engine.dispose()


def task(
    name: str,
    *deps: str,
    soft: tuple[str, ...] = (),
    provider: str = "wide",
    on_failure: str = "continue",
) -> TaskSpec:
    return TaskSpec(
        name=name,
        provider=provider,
        action="noop",
        dependencies=list(deps),
        soft_dependencies=list(soft),
        on_failure=on_failure,
    )


async def submit(
    store: TaskStore, *tasks: TaskSpec, parallel_limit: int = 8, rollback: bool = False
) -> str:
    workflow_id = new_id()
    ids = {t.name: new_id() for t in tasks}
    rows = [task_row(t, ids[t.name], workflow_id, i, DEFAULTS) for i, t in enumerate(tasks)]
    edges = [(ids[t.name], ids[d], "hard") for t in tasks for d in t.dependencies]
    edges += [(ids[t.name], ids[d], "soft") for t in tasks for d in t.soft_dependencies]
    workflow = {
        "id": workflow_id,
        "kind": "custom",
        "name": "w",
        "status": "Pending",
        "parallel_limit": parallel_limit,
        "rollback_enabled": rollback,
        "check_mode": False,
        "cancel_requested": False,
        "owner": None,
        "spec": {},
        "error": None,
        "created_at": rows[0]["created_at"],
        "started_at": None,
        "completed_at": None,
    }
    await store.submit(NewWorkflow(workflow, rows, edges))
    return workflow_id


async def state(store: TaskStore, workflow_id: str) -> tuple[str, dict[str, tuple[str, int]]]:
    """The workflow's status, and each task's (status, attempts), by name."""
    if isinstance(store, MemoryTaskStore) and type(store) is MemoryTaskStore:
        wf = store.workflow(workflow_id)
        assert wf is not None
        return wf.status, {t.name: (t.status, t.attempts) for t in wf.tasks.values()}
    journal = getattr(store, "journal", None)
    if journal is not None:
        await journal.flush()
    engine: Any = store.engine  # type: ignore[attr-defined]
    workflow = await get_workflow(engine, workflow_id)
    assert workflow is not None
    tasks = await tasks_of(engine, [workflow_id])
    return workflow["status"], {t["name"]: (t["status"], t["attempts"]) for t in tasks}


def names(claims: list[Claim]) -> list[str]:
    return sorted(c.name for c in claims)


async def complete(store: TaskStore, claim: Claim) -> None:
    assert await store.end(AttemptEnd(claim, Outcome.COMPLETED, output="ok")) is not None


async def test_a_chain_runs_in_order_and_the_workflow_completes(store):
    workflow_id = await submit(store, task("a"), task("b", "a"), task("c", "b"))
    for expected in ("a", "b", "c"):
        (claim,) = await store.claim(10)
        assert claim.name == expected
        assert claim.attempt == 1
        assert await store.claim(10) == []
        await complete(store, claim)
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Completed"
    assert tasks == {"a": ("Completed", 1), "b": ("Completed", 1), "c": ("Completed", 1)}


async def test_claims_keep_the_workflow_the_provider_and_the_global_limits(store):
    first = await submit(store, *(task(f"w{i}") for i in range(5)), parallel_limit=2)
    claims = await store.claim(10)
    assert len(claims) == 2  # the workflow's parallel_limit
    await submit(store, *(task(f"n{i}", provider="narrow") for i in range(3)))
    more = await store.claim(10)
    assert names(more) == ["n0"]  # the narrow provider's own limit
    await submit(store, *(task(f"x{i}") for i in range(3)))
    last = await store.claim(10)
    assert len(last) == 1  # the global limit: 2 + 1 + 1 = 4
    await complete(store, claims[0])
    assert len(await store.claim(10)) == 1  # a place freed
    _, tasks = await state(store, first)
    assert sum(1 for s, _ in tasks.values() if s == "Completed") == 1


async def test_a_failed_attempt_is_retried_after_its_delay_then_fails_for_good(store):
    workflow_id = await submit(store, task("flaky"), task("after", "flaky"))
    (claim,) = await store.claim(10)
    report = await store.end(AttemptEnd(claim, Outcome.FAILED, "boom", retryable=True))
    assert report is not None
    assert report.retry_delay is not None
    assert report.status == "Pending"
    retried = await _claim_when_ready(store)
    assert (retried.name, retried.attempt) == ("flaky", 2)
    await store.end(AttemptEnd(retried, Outcome.FAILED, "boom again", retryable=True))
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Failed"
    assert tasks == {"flaky": ("Failed", 2), "after": ("Cancelled", 0)}


async def test_a_failure_cancels_hard_dependents_and_releases_soft_ones(store):
    workflow_id = await submit(
        store, task("a"), task("hard", "a"), task("below", "hard"), task("soft", soft=("a",))
    )
    (claim,) = await store.claim(10)
    await store.end(AttemptEnd(claim, Outcome.FAILED, "no", retryable=False))
    (soft,) = await store.claim(10)
    assert soft.name == "soft"
    await complete(store, soft)
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Failed"
    assert tasks["hard"][0] == tasks["below"][0] == "Cancelled"
    assert tasks["soft"] == ("Completed", 1)


async def test_a_task_that_fails_the_workflow_stops_its_pending_work(store):
    workflow_id = await submit(
        store, task("critical", on_failure="fail"), task("slow"), task("later", "slow")
    )
    claims = {c.name: c for c in await store.claim(10)}
    await store.end(AttemptEnd(claims["critical"], Outcome.FAILED, "no", retryable=False))
    # A running task still completes; what would have come after never starts.
    await complete(store, claims["slow"])
    assert await store.claim(10) == []
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Failed"
    assert tasks["later"][0] == "Cancelled"


async def test_a_failed_workflow_with_rollback_compensates_dependents_first(store):
    workflow_id = await submit(
        store, task("base"), task("top", "base"), task("breaks", "top"), rollback=True
    )
    for _ in range(2):
        (claim,) = await store.claim(10)
        await complete(store, claim)
    (breaks,) = await store.claim(10)
    report = await store.end(AttemptEnd(breaks, Outcome.FAILED, "no", retryable=False))
    assert report is not None
    assert report.rollback_started
    (undo_top,) = await store.claim(10)
    assert (undo_top.name, undo_top.compensates is not None) == ("undo top", True)
    assert await store.claim(10) == []  # "undo base" waits for "undo top"
    await complete(store, undo_top)
    (undo_base,) = await store.claim(10)
    assert undo_base.name == "undo base"
    await complete(store, undo_base)
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "RolledBack"
    assert tasks["undo top"] == tasks["undo base"] == ("Completed", 1)


async def test_a_cancel_ends_pending_tasks_and_reports_the_running_ones(store):
    workflow_id = await submit(store, task("running"), task("waiting", "running"))
    (claim,) = await store.claim(10)
    report = await store.cancel(workflow_id)
    assert report is not None
    assert report.running == [claim.task_id]
    assert report.cancelled == 1
    assert await store.claim(10) == []
    end = await store.end(AttemptEnd(claim, Outcome.CANCELLED))
    assert end is not None
    assert end.status == "Cancelled"
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Cancelled"
    assert {s for s, _ in tasks.values()} == {"Cancelled"}
    assert await store.cancel(workflow_id) is None  # ended already


async def test_a_released_attempt_is_not_counted_and_runs_again_at_once(store):
    workflow_id = await submit(store, task("handed-back"))
    (claim,) = await store.claim(10)
    report = await store.end(AttemptEnd(claim, Outcome.RELEASED, "worker stopped"))
    assert report is not None
    assert report.status == "Pending"
    (again,) = await store.claim(10)
    assert again.attempt == 1
    await complete(store, again)
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    assert (await state(store, workflow_id))[1] == {"handed-back": ("Completed", 1)}


async def test_an_end_is_recorded_once(store):
    await submit(store, task("once"))
    (claim,) = await store.claim(10)
    await complete(store, claim)
    assert await store.end(AttemptEnd(claim, Outcome.COMPLETED)) is None


async def test_settle_records_a_batch_of_ends_then_claims_what_they_released(store):
    workflow_id = await submit(
        store, task("start"), *(task(f"m{i}", "start") for i in range(3)), task("join", "m0")
    )
    (start,) = (await store.settle([], 10)).claims
    first = await store.settle([AttemptEnd(start, Outcome.COMPLETED, output="ok")], 10)
    assert [r.status if r else None for r in first.reports] == ["Completed"]
    assert names(first.claims) == ["m0", "m1", "m2"]
    assert first.unrecorded == set()
    # The ends of a batch, then a claim that sees them: m0 released the join.
    middle = {c.name: c for c in first.claims}
    second = await store.settle(
        [AttemptEnd(middle[n], Outcome.COMPLETED, output=n) for n in ("m0", "m1")], 10
    )
    assert [r.status if r else None for r in second.reports] == ["Completed", "Completed"]
    assert names(second.claims) == ["join"]
    # The last ends of a workflow end it, whichever way the store records them.
    (join,) = second.claims
    last = await store.settle(
        [
            AttemptEnd(middle["m2"], Outcome.COMPLETED, output="m2"),
            AttemptEnd(join, Outcome.COMPLETED, output="join"),
        ],
        10,
    )
    assert [r.status if r else None for r in last.reports] == ["Completed", "Completed"]
    assert last.claims == []
    await asyncio.wait_for(store.wait_ended(workflow_id), 10)
    status, tasks = await state(store, workflow_id)
    assert status == "Completed"
    assert set(tasks.values()) == {("Completed", 1)}


async def test_settle_applies_the_rules_to_every_kind_of_end_and_claims_under_the_limits(store):
    workflow_id = await submit(
        store,
        task("ok"),
        task("flaky"),
        task("released"),
        task("after-ok", "ok"),
        *(task(f"more{i}") for i in range(4)),
        parallel_limit=3,
    )
    claims = {c.name: c for c in (await store.settle([], 10)).claims}
    assert set(claims) == {"ok", "flaky", "released"}  # the workflow's limit
    settlement = await store.settle(
        [
            AttemptEnd(claims["ok"], Outcome.COMPLETED, output="ok"),
            AttemptEnd(claims["flaky"], Outcome.FAILED, "boom", retryable=True),
            AttemptEnd(claims["released"], Outcome.RELEASED, "stopping"),
            AttemptEnd(claims["ok"], Outcome.COMPLETED, output="twice"),  # recorded once
        ],
        2,  # this worker's room
    )
    statuses = [r.status if r else None for r in settlement.reports]
    assert statuses == ["Completed", "Pending", "Pending", None]
    assert settlement.reports[1] is not None and settlement.reports[1].retry_delay is not None
    assert len(settlement.claims) == 2  # within the room given
    status, tasks = await state(store, workflow_id)
    assert status == "Running"
    assert tasks["ok"] == ("Completed", 1)
    assert tasks["flaky"] in {("Pending", 1), ("Running", 2)}  # (after its short delay)
    assert tasks["released"] in {("Pending", 0), ("Running", 1)}  # the attempt not counted
    assert sum(1 for s, _ in tasks.values() if s == "Running") == 2


async def _claim_when_ready(store: TaskStore) -> Claim:
    async with asyncio.timeout(10):
        while True:
            claims = await store.claim(10)
            if claims:
                (claim,) = claims
                return claim
            await store.wait_for_work(0.05)


@pytest.mark.skipif(not ON_POSTGRES, reason="the webhook outbox of PostgreSQL's settle")
async def test_on_postgresql_a_settle_writes_the_outbox_rows_of_its_events(tmp_path):
    """With webhooks on, the events the settle call writes come back with their `seq`
    and get their deliveries in the same transaction."""
    from sqlalchemy import select

    from orchestrator.settings import WebhookEndpoint, WebhookSettings, load_settings
    from orchestrator.store.engine import create_engine, upgrade
    from orchestrator.store.models import Event, WebhookDelivery
    from orchestrator.store.postgres import PostgresTaskStore
    from orchestrator.webhooks import outbox_for

    settings = load_settings(environ=settings_env(tmp_path / "data"))
    engine = create_engine(settings)
    await upgrade(engine)
    endpoint = WebhookEndpoint(url="http://127.0.0.1:9/hook", events=["*"], secret="s")
    outbox = outbox_for(WebhookSettings(enabled=True, endpoints=[endpoint]))
    store = PostgresTaskStore(
        engine,
        LIMITS,
        DEFAULTS,
        worker_id="host/outbox",
        lease=30,
        poll_interval=0.2,
        outbox=outbox,
    )
    await store.open()
    await store.recovered()
    try:
        workflow_id = await submit(store, task("a"), task("b", "a"), task("c", "b"))
        (a,) = (await store.settle([], 10)).claims
        settled = await store.settle([AttemptEnd(a, Outcome.COMPLETED, output="ok")], 10)
        assert names(settled.claims) == ["b"]
        async with engine.connect() as connection:
            events = (
                await connection.execute(
                    select(Event.seq, Event.type, Event.data).where(
                        Event.workflow_id == workflow_id
                    )
                )
            ).all()
            deliveries = (
                await connection.execute(select(WebhookDelivery.event_seq, WebhookDelivery.event))
            ).all()
    finally:
        await store.close()
        await engine.dispose()
    by_seq = {seq: (kind, data.get("status")) for seq, kind, data in events}
    delivered = {seq: name for seq, name in deliveries}
    started = [
        seq for seq, (kind, s) in by_seq.items() if (kind, s) == ("TaskStatusChanged", "Running")
    ]
    completed = [
        seq for seq, (kind, s) in by_seq.items() if (kind, s) == ("TaskStatusChanged", "Completed")
    ]
    assert len(started) == 2 and len(completed) == 1  # a, b started; a completed
    assert {delivered[seq] for seq in started} == {"task.started"}
    assert delivered[completed[0]] == "task.completed"
    running = [
        seq
        for seq, (kind, s) in by_seq.items()
        if (kind, s) == ("WorkflowStatusChanged", "Running")
    ]
    assert [delivered[seq] for seq in running] == ["workflow.running"]
