"""Graph validation: properties over random graphs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.errors import CycleDetected, InvalidInput
from orchestrator.graph import build_graph, descendants, topological_order

# Touches no database: runs in the SQLite pass only (tests/conftest.py).
pytestmark = pytest.mark.backend_independent


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 25) -> list[tuple[str, list[str]]]:
    """Random DAGs: a task may only depend on tasks listed before it."""
    n = draw(st.integers(1, max_nodes))
    tasks: list[tuple[str, list[str]]] = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, max(0, i - 1)), unique=True, max_size=min(i, 4)))
        tasks.append((f"t{i}", [f"t{d}" for d in deps] if i else []))
    return draw(st.permutations(tasks))


@given(dags())
def test_every_dag_is_accepted_and_ordered_dependencies_first(tasks):
    order = topological_order(build_graph(tasks))
    position = {name: i for i, name in enumerate(order)}
    assert sorted(order) == sorted(name for name, _ in tasks)
    for name, deps in tasks:
        for dep in deps:
            assert position[dep] < position[name]


@given(dags(), st.data())
def test_a_back_edge_is_refused_as_a_cycle_naming_its_tasks(tasks, data):
    graph = build_graph(tasks)
    edges = list(graph.edges)
    if not edges:
        return
    dep, dependent = data.draw(st.sampled_from(edges))
    # Make `dep` depend on something downstream of it: a cycle through both.
    below = sorted(descendants(graph.successors, dep))
    target = data.draw(st.sampled_from(below))
    cyclic = [(n, [*d, target] if n == dep else d) for n, d in tasks]
    with pytest.raises(CycleDetected) as caught:
        build_graph(cyclic)
    cycle = caught.value.details["cycle"]
    assert cycle[0] == cycle[-1]
    assert dep in cycle and target in cycle
    assert " -> ".join(cycle) in caught.value.message
    assert dependent in graph


def test_unknown_dependency_is_refused_with_its_path():
    with pytest.raises(InvalidInput, match=r"tasks\[1\]\.dependencies\[0\]: unknown task 'zz'"):
        build_graph([("a", []), ("b", ["zz"])])


def test_duplicate_task_and_duplicate_dependency_are_refused():
    with pytest.raises(InvalidInput, match="duplicate name 'a'"):
        build_graph([("a", []), ("a", [])])
    with pytest.raises(InvalidInput, match="lists dependency 'a' twice"):
        build_graph([("a", []), ("b", ["a", "a"])])


def test_self_dependency_is_a_cycle():
    with pytest.raises(CycleDetected, match="a -> a"):
        build_graph([("a", ["a"])])


def test_the_order_is_the_least_name_first_among_the_ready_ones():
    graph = build_graph([("c", []), ("b", ["c"]), ("a", ["c"]), ("d", [])])
    assert topological_order(graph) == ["c", "a", "b", "d"]


def test_a_longer_cycle_is_named_dependency_first():
    with pytest.raises(CycleDetected) as caught:
        build_graph([("a", ["c"]), ("b", ["a"]), ("c", ["b"])])
    cycle = caught.value.details["cycle"]
    assert cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["a", "b", "c"]
    # Each name is a dependency of the next one.
    depends_on = {"a": "c", "b": "a", "c": "b"}
    assert all(depends_on[after] == before for before, after in itertools.pairwise(cycle))
