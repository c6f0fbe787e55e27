"""Rollback planning (pure): compensation names are unique and storable by construction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.graph import build_graph
from orchestrator.ids import new_id
from orchestrator.rules import MAX_NAME, DoneTask, plan_compensations

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent

#: Names as users write them, and the awkward ones: long, alike, or another task's id.
names = st.one_of(
    st.sampled_from(["server web-01", "server web-02", "taskserv k8s on web-01"]),
    st.text(min_size=1, max_size=MAX_NAME),
)


@st.composite
def done_tasks(draw: st.DrawFn) -> list[DoneTask]:
    """Completed tasks of several workflows, all made within one millisecond (their ids
    share every leading character but the last few), many with the same names."""
    count = draw(st.integers(1, 40))
    ids = [new_id() for _ in range(count)]  # one process, one burst: same millisecond
    tasks = []
    for index, task_id in enumerate(ids):
        name = draw(names)
        if draw(st.booleans()) and index:  # named after an earlier task's id
            name = f"{name[:100]} [{ids[draw(st.integers(0, index - 1))]}]"
        tasks.append(
            DoneTask(
                id=task_id,
                name=name,
                provider="upcloud",
                action="server.create",
                params={},
                output=None,
                result=None,
                dependencies=(),
                group=draw(st.integers(0, 3)),
            )
        )
    return tasks


@given(done_tasks())
def test_compensation_names_are_unique_and_fit_the_store(done):
    specs = plan_compensations(done)
    names = [spec.name for spec in specs]
    assert len(set(names)) == len(names)
    assert all(len(name) <= MAX_NAME for name in names)
    build_graph([(s.name, s.soft_dependencies) for s in specs])  # a valid graph


def test_a_single_workflows_compensations_read_undo_and_the_task_name():
    done = [
        DoneTask(new_id(), name, "upcloud", "server.create", {}, None, None, ())
        for name in ("server web-01", "server web-02")
    ]
    assert [s.name for s in plan_compensations(done)] == [
        "undo server web-01",
        "undo server web-02",
    ]


def test_three_runs_of_one_infra_within_a_minute_roll_back_to_a_checkpoint():
    """The newcomer's case: the same server names in three workflows, ids alike."""
    done = [
        DoneTask(
            new_id(), f"server web-0{n}", "upcloud", "server.create", {}, None, None, (), None, run
        )
        for run in range(3)
        for n in (1, 2)
    ]
    names = [s.name for s in plan_compensations(done)]
    assert len(set(names)) == 6
    assert all(name.startswith("undo server web-0") for name in names)
