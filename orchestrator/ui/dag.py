"""A workflow's task graph laid out for the console, by the server.

Layers are the longest path from the roots (a task sits one column right of its
furthest dependency), so every edge points rightwards; within a column the tasks are
ordered by the mean row of their dependencies (one barycentre sweep), which keeps most
edges short. The page draws the result as inline SVG (`templates/workflow.html`): no
layout code runs in the browser, and a 1,000-task graph is laid out in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.graph import Dag, topological_order

NODE_WIDTH = 200
NODE_HEIGHT = 40
COLUMN_GAP = 70
ROW_GAP = 18
MARGIN = 16


@dataclass(frozen=True, slots=True)
class Node:
    id: str
    name: str
    status: str
    compensation: bool
    layer: int
    row: int
    x: int
    y: int

    @property
    def label(self) -> str:
        """The name as it fits in the box, without a batch operation's prefix (the
        whole name is the node's title)."""
        short = self.name.split("/", 1)[-1]
        return short if len(short) <= 26 else short[:25] + "…"


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    soft: bool
    #: The SVG path, from the dependency's right side to the dependent's left side.
    path: str


@dataclass(frozen=True, slots=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layout(tasks: Iterable[Mapping[str, Any]]) -> Layout:
    """Lay out tasks as the API returns them (`id`, `name`, `status`, `dependencies`,
    `soft_dependencies`, `compensates`); a dependency outside `tasks` is left out."""
    by_id = {str(t["id"]): t for t in tasks}
    graph = Dag({task_id: [] for task_id in by_id})
    predecessors: dict[str, list[str]] = {task_id: [] for task_id in by_id}
    soft_edges: set[tuple[str, str]] = set()
    for task_id, task in by_id.items():
        soft = set(task.get("soft_dependencies") or [])
        for dep in task.get("dependencies") or []:
            if dep in by_id and task_id not in graph.successors[dep]:
                graph.successors[dep].append(task_id)
                predecessors[task_id].append(dep)
                if dep in soft:
                    soft_edges.add((dep, task_id))
    order = topological_order(graph)
    if len(order) < len(by_id):  # never for a stored workflow (cycles are refused); be total
        order = list(by_id)
    layer: dict[str, int] = {}
    for node in order:
        layer[node] = max((layer[p] + 1 for p in predecessors[node] if p in layer), default=0)
    columns: dict[int, list[str]] = {}
    for node in order:
        columns.setdefault(layer[node], []).append(node)
    row: dict[str, int] = {}
    for index in sorted(columns):
        column = columns[index]
        if index:
            column.sort(key=lambda n: _barycentre(predecessors, row, n))
        for position, node in enumerate(column):
            row[node] = position
    nodes = [
        Node(
            id=node,
            name=str(by_id[node].get("name") or node),
            status=str(by_id[node].get("status") or "Pending"),
            compensation=bool(by_id[node].get("compensates")),
            layer=layer[node],
            row=row[node],
            x=MARGIN + layer[node] * (NODE_WIDTH + COLUMN_GAP),
            y=MARGIN + row[node] * (NODE_HEIGHT + ROW_GAP),
        )
        for node in order
    ]
    placed = {n.id: n for n in nodes}
    edges = [
        Edge(source, target, (source, target) in soft_edges, _path(placed[source], placed[target]))
        for source, target in graph.edges
    ]
    layers = max(columns, default=-1) + 1
    rows = max((len(c) for c in columns.values()), default=0)
    width = 2 * MARGIN + max(layers * (NODE_WIDTH + COLUMN_GAP) - COLUMN_GAP, 0)
    height = 2 * MARGIN + max(rows * (NODE_HEIGHT + ROW_GAP) - ROW_GAP, 0)
    return Layout(nodes, edges, width, height)


def _barycentre(predecessors: Mapping[str, list[str]], row: Mapping[str, int], node: str) -> float:
    rows = [row[p] for p in predecessors[node] if p in row]
    return sum(rows) / len(rows) if rows else 0.0


def _path(source: Node, target: Node) -> str:
    x1, y1 = source.x + NODE_WIDTH, source.y + NODE_HEIGHT // 2
    x2, y2 = target.x, target.y + NODE_HEIGHT // 2
    bend = (x2 - x1) // 2
    return f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"
