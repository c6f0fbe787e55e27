"""Rollback planning as pure functions: which completed tasks to undo, in which order.

A compensation task undoes one completed task. Compensations run dependents first: if
B depended on A, "undo B" comes before "undo A". The order between compensations is a
soft dependency, so one compensation failing (an irreversible action, say) neither hides
nor blocks the others; every failure is reported.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.specs import TaskDefaults, TaskSpec, task_row


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


#: The longest task name the store keeps (`tasks.name`).
MAX_NAME = 200


def _with_id(task: DoneTask) -> str:
    suffix = f" [{task.id}]"
    return f"undo {task.name[: MAX_NAME - len('undo ') - len(suffix)]}{suffix}"


def compensation_names(done: Sequence[DoneTask]) -> dict[str, str]:
    """A name for each compensation, unique by construction and short enough to store.

    `undo <name>` where that is unique and fits (names are unique within one workflow,
    so an automatic rollback reads naturally); otherwise `undo <name> [<task id>]`,
    which ids make unique. Should a plain name still equal another's (a task named
    after another task's id), every name carries its id.
    """
    plain = {t.id: f"undo {t.name}" for t in done}
    counts = Counter(plain.values())
    names = {
        t.id: plain[t.id]
        if counts[plain[t.id]] == 1 and len(plain[t.id]) <= MAX_NAME
        else _with_id(t)
        for t in done
    }
    if len(set(names.values())) < len(names):
        names = {t.id: _with_id(t) for t in done}
    return names


def plan_compensations(done: Sequence[DoneTask]) -> list[TaskSpec]:
    """Compensation specs for `done`, ordered dependents first.

    Within a group the original edges are reversed; across groups, every compensation
    of a group waits for all compensations of the next group (and so of every later one).
    """
    by_id = {t.id: t for t in done}
    names = compensation_names(done)
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


def compensation_rows(
    done: Sequence[DoneTask],
    workflow_id: str,
    first_position: int,
    defaults: TaskDefaults,
    new_id: Callable[[], str],
) -> tuple[list[dict[str, Any]], list[tuple[str, str, str]]]:
    """The task rows and (task, depends on, kind) edges undoing `done`."""
    specs = plan_compensations(done)
    ids = {spec.name: new_id() for spec in specs}
    rows = [
        task_row(spec, ids[spec.name], workflow_id, first_position + i, defaults)
        for i, spec in enumerate(specs)
    ]
    edges = [(ids[spec.name], ids[d], "soft") for spec in specs for d in spec.soft_dependencies]
    return rows, edges
