"""Task graphs as pure functions: validation before anything is stored.

No I/O lives here, so every rule can be property-tested. Nodes are task names (unique
within a workflow); edges point from a dependency to its dependent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import networkx as nx

from orchestrator.errors import CycleDetected, InvalidInput


def build_graph(tasks: Sequence[tuple[str, Sequence[str]]], what: str = "tasks") -> nx.DiGraph[str]:
    """Validate `(name, dependencies)` pairs and return the DAG.

    Problems are reported at their path (`tasks[1].dependencies[0]`, or with `what`
    naming the list, `operations[1]…`).

    Refuses a duplicate task name, a dependency listed twice, an unknown dependency,
    a task depending on itself, and any cycle (naming its tasks in order).
    """
    graph: nx.DiGraph[str] = nx.DiGraph()
    for index, (name, _deps) in enumerate(tasks):
        if name in graph:
            raise InvalidInput(f"{what}[{index}]: duplicate name '{name}'")
        graph.add_node(name)
    for index, (name, deps) in enumerate(tasks):
        seen: set[str] = set()
        for dep_index, dep in enumerate(deps):
            where = f"{what}[{index}].dependencies[{dep_index}]"
            if dep in seen:
                raise InvalidInput(f"{where}: '{name}' lists dependency '{dep}' twice")
            if dep not in graph:
                raise InvalidInput(f"{where}: unknown {what[:-1]} '{dep}'")
            seen.add(dep)
            graph.add_edge(dep, name)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return graph
    names = [edge[0] for edge in cycle] + [cycle[0][0]]
    raise CycleDetected(names)


def topological_order(graph: nx.DiGraph[str]) -> list[str]:
    """A deterministic order in which every dependency comes before its dependents."""
    return list(nx.lexicographical_topological_sort(graph))


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
