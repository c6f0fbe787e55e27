"""Task graphs as pure functions: validation before anything is stored.

No I/O lives here, so every rule can be property-tested. Nodes are task names (unique
within a workflow); edges point from a dependency to its dependent.

The standard library's `graphlib` finds cycles; the rest is a few lines. (networkx did
this before: its import brought 285 modules into every process's start for one cycle
check and one sort — docs/architecture.md, "Dependencies".)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter

from orchestrator.errors import CycleDetected, InvalidInput


@dataclass(slots=True)
class Dag:
    """A validated task graph: each task's dependents, in the order they were listed."""

    successors: dict[str, list[str]] = field(default_factory=dict)

    def __contains__(self, name: object) -> bool:
        return name in self.successors

    def __iter__(self) -> Iterator[str]:
        return iter(self.successors)

    def __len__(self) -> int:
        return len(self.successors)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(dependency, dependent) pairs."""
        return [(dep, name) for dep, names in self.successors.items() for name in names]


def build_graph(tasks: Sequence[tuple[str, Sequence[str]]], what: str = "tasks") -> Dag:
    """Validate `(name, dependencies)` pairs and return the DAG.

    Problems are reported at their path (`tasks[1].dependencies[0]`, or with `what`
    naming the list, `operations[1]…`).

    Refuses a duplicate task name, a dependency listed twice, an unknown dependency,
    a task depending on itself, and any cycle (naming its tasks in order).
    """
    graph = Dag()
    for index, (name, _deps) in enumerate(tasks):
        if name in graph:
            raise InvalidInput(f"{what}[{index}]: duplicate name '{name}'")
        graph.successors[name] = []
    for index, (name, deps) in enumerate(tasks):
        seen: set[str] = set()
        for dep_index, dep in enumerate(deps):
            where = f"{what}[{index}].dependencies[{dep_index}]"
            if dep in seen:
                raise InvalidInput(f"{where}: '{name}' lists dependency '{dep}' twice")
            if dep not in graph:
                raise InvalidInput(f"{where}: unknown {what[:-1]} '{dep}'")
            seen.add(dep)
            graph.successors[dep].append(name)
    try:
        # Each node with its predecessors: a cycle comes out dependency first.
        TopologicalSorter({name: deps for name, deps in tasks}).prepare()
    except CycleError as exc:
        raise CycleDetected(list(exc.args[1])) from None
    return graph


def topological_order(graph: Dag) -> list[str]:
    """A deterministic order in which every dependency comes before its dependents:
    among the tasks ready at each step, the least name first."""
    waiting = dict.fromkeys(graph.successors, 0)
    for _dep, name in graph.edges:
        waiting[name] += 1
    ready = [name for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(name)
        for dependent in graph.successors[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    return order


def descendants(graph: Mapping[str, Iterable[str]], start: str) -> set[str]:
    """Every task reachable from `start` through `dependents` edges (not `start` itself)."""
    found: set[str] = set()
    stack = list(graph.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in found:
            found.add(node)
            stack.extend(graph.get(node, ()))
    return found
