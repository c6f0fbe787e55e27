"""Rollback planning as pure functions: which completed tasks to undo, in which order.

A compensation task undoes one completed task. Compensations run dependents first: if
B depended on A, "undo B" comes before "undo A". The order between compensations is a
soft dependency, so one compensation failing (an irreversible action, say) neither hides
nor blocks the others; every failure is reported.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.planner import TaskSpec


@dataclass(frozen=True, slots=True)
class DoneTask:
    """A completed task as rollback planning needs it."""

    id: str
    name: str
    provider: str
    action: str
    params: dict[str, Any]
    output: str | None
    result: dict[str, Any] | None
    #: ids of the tasks it depended on
    dependencies: tuple[str, ...]
    operation_id: str | None = None
    #: groups tasks whose compensations must all end before an earlier group's start
    #: (a later workflow's work is undone before an earlier one's).
    group: int = 0


def compensation_name(task: DoneTask) -> str:
    return f"undo {task.name}" if task.group == 0 else f"undo {task.name} [{task.id[:8]}]"


def plan_compensations(done: Sequence[DoneTask]) -> list[TaskSpec]:
    """Compensation specs for `done`, ordered dependents first.

    Within a group the original edges are reversed; across groups, every compensation
    of a group waits for all compensations of the next group (and so of every later one).
    """
    by_id = {t.id: t for t in done}
    names = {t.id: compensation_name(t) for t in done}
    dependents: dict[str, list[str]] = {t.id: [] for t in done}
    for task in done:
        for dep in task.dependencies:
            if dep in by_id and by_id[dep].group == task.group:
                dependents[dep].append(task.id)
    groups = sorted({t.group for t in done})
    following = dict(itertools.pairwise(groups))
    later: dict[int, list[str]] = {
        g: [names[t.id] for t in done if t.group == following.get(g)] for g in groups
    }
    specs = []
    for task in done:
        after = [names[d] for d in dependents[task.id]] + later[task.group]
        specs.append(
            TaskSpec(
                name=names[task.id],
                provider=task.provider,
                action=task.action,
                params=task.params,
                soft_dependencies=after,
                command=f"{task.provider} compensate {task.action}",
                args=[task.name],
                operation_id=task.operation_id,
                compensates=task.id,
                compensation={"output": task.output, "result": task.result or {}},
            )
        )
    return specs
