"""Following a workflow until it ends: a live display on a terminal, plain lines elsewhere.

`watch` polls `GET /workflows/{id}`, the retries in `GET /workflows/{id}/events` (all
of them, from the start: a follower that attaches late shows those it missed) and
`GET /tasks?workflow_id=` every `interval` seconds, and returns the workflow's final
state with its last-seen tasks. On a terminal it draws a bar of finished/total tasks,
the counts by status and the running tasks, and prints retries and failures above it
as they happen. Anywhere else (a pipe, a log file, a test) it prints one line per task
state change it observes, one per retry, and one per workflow status change, and
nothing that moves. A change that starts and ends between two polls shows as its end
state only (a retry excepted).

Workflows larger than `FULL_SCAN_LIMIT` tasks are followed through their counts and
their Running and Failed tasks only, so a poll stays cheap.

`watch_batch` follows a batch the same way through `GET /batch/operations/{id}`: on a
terminal a row per operation (status, bar, percent, task counts) under the batch's
status, with retries, failures and failed undos printed above it; elsewhere one line per
operation status change, per retry, failure or undo of a task, and per batch status
change. The batch answer carries no attempt counts, so a retry seen costs one
`GET /tasks/{id}` for them.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from orchestrator.client import (
    MAX_PAGE,
    Batch,
    BatchOperation,
    OperationResult,
    OrchestratorClient,
    Task,
    Workflow,
)
from orchestrator.clock import format_duration

FULL_SCAN_LIMIT = 2000
#: How each status is coloured on a terminal.
STATUS_STYLES = {
    "Pending": "dim",
    "Running": "cyan",
    "Completed": "green",
    "Failed": "red",
    "Cancelled": "yellow",
    "Retrying": "magenta",
    "RollingBack": "magenta",
    "RolledBack": "yellow",
    "UndoFailed": "red",
}
_RUNNING_SHOWN = 8
_DETAIL_CHARS = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    """The workflow as it ended, with the tasks seen in the last poll."""

    workflow: Workflow
    tasks: list[Task]

    @property
    def succeeded(self) -> bool:
        return self.workflow.status == "Completed"

    @property
    def failed_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.status == "Failed"]


@dataclass(frozen=True, slots=True)
class Change:
    """One observed task state change, in the words a person reads."""

    name: str
    #: A task status, or "Retrying" for a failed attempt that will be tried again.
    state: str
    detail: str
    at: datetime


def watch(
    client: OrchestratorClient,
    workflow_id: str,
    *,
    console: Console,
    out: TextIO | None = None,
    interval: float = 0.3,
) -> Outcome:
    """Follow the workflow until its status is final; return how it ended.

    The live display is used when `console` is a terminal; otherwise lines go to `out`
    (default stdout), flushed after every poll. API errors propagate (`ApiError`,
    `Unreachable`), and so does `KeyboardInterrupt`, with the display closed cleanly.
    """
    if console.is_terminal:
        return _watch_live(client, workflow_id, console, interval)
    return _watch_plain(client, workflow_id, out or sys.stdout, interval)


class ChangeLog:
    """Remembers each task's last (status, attempts) and reports what differs.

    Retries come from the workflow's event log instead (`retries`), which keeps every
    one of them: a follower that attaches late, or polls less often than a task is
    retried, still shows each."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int]] = {}
        self._after = 0

    def changes(self, tasks: Iterable[Task]) -> list[Change]:
        found: list[Change] = []
        for task in tasks:
            state = _state(task)
            key = (state, task.attempts)
            previous = self._seen.get(task.id, ("Pending", 0))
            self._seen[task.id] = key
            if key != previous and state not in ("Pending", "Retrying"):
                found.append(Change(task.name, state, _detail(task, state), _when(task, state)))
        found.sort(key=lambda c: c.at)
        return found

    def retries(self, client: OrchestratorClient, workflow_id: str) -> list[Change]:
        """The retries the log recorded since the last call."""
        found = []
        for event in client.workflow_events(workflow_id, self._after):
            self._after = event.seq
            data = event.data
            if event.event_type == "TaskStatusChanged" and data.get("retrying"):
                attempt = f"attempt {data.get('attempt')}/{data.get('max_attempts')}"
                detail = f"{attempt} failed, will retry: {_one_line(str(data.get('error') or ''))}"
                found.append(Change(str(data.get("name")), "Retrying", detail, event.timestamp))
        return found


def poll(client: OrchestratorClient, workflow_id: str) -> tuple[Workflow, list[Task]]:
    """The workflow, then its tasks (read after it, so a final workflow has final tasks)."""
    workflow = client.get_workflow(workflow_id)
    if workflow.total_tasks <= FULL_SCAN_LIMIT:
        return workflow, client.all_tasks(workflow_id=workflow_id)
    running = client.list_tasks(workflow_id=workflow_id, status="Running", limit=MAX_PAGE).items
    return workflow, running + client.all_tasks(workflow_id=workflow_id, status="Failed")


def _watch_plain(
    client: OrchestratorClient, workflow_id: str, out: TextIO, interval: float
) -> Outcome:
    log = ChangeLog()
    last_status = ""
    while True:
        workflow, tasks = poll(client, workflow_id)
        # (when, rank, line): a workflow starts before its tasks and ends after them.
        changes = log.retries(client, workflow_id) + log.changes(tasks)
        lines = [(c.at, 1, f"{_clock(c.at)} {c.state:<9} {c.name}  {c.detail}") for c in changes]
        if workflow.status != last_status:
            last_status = workflow.status
            at = _workflow_when(workflow)
            counts = f"{workflow.finished_tasks}/{workflow.total_tasks} tasks"
            line = f"{_clock(at)} workflow  {workflow.status:<9} {workflow.name}  {counts}"
            lines.append((at, 2 if workflow.is_final else 0, line))
        for _, _, line in sorted(lines, key=lambda entry: entry[:2]):
            print(line, file=out)
        out.flush()
        if workflow.is_final:
            return Outcome(workflow, tasks)
        time.sleep(interval)


def _watch_live(
    client: OrchestratorClient, workflow_id: str, console: Console, interval: float
) -> Outcome:
    log = ChangeLog()
    workflow, tasks = poll(client, workflow_id)
    with Live(_panel(workflow, tasks), console=console, transient=False) as live:
        while True:
            for change in log.retries(client, workflow_id) + log.changes(tasks):
                if change.state in ("Retrying", "Failed"):
                    style = STATUS_STYLES[change.state]
                    line = Text.assemble(
                        (f"{change.state:<9} ", style), (change.name, "bold"), "  "
                    )
                    line.append(change.detail)
                    live.console.print(line)
            live.update(_panel(workflow, tasks))
            if workflow.is_final:
                return Outcome(workflow, tasks)
            time.sleep(interval)
            workflow, tasks = poll(client, workflow_id)


def _panel(workflow: Workflow, tasks: list[Task]) -> RenderableType:
    header = Text.assemble(
        (workflow.name, "bold"),
        f"  {workflow.id}  ",
        (workflow.status, STATUS_STYLES.get(workflow.status, "")),
    )
    if workflow.check_mode:
        header.append("  (check mode: nothing is changed)", "dim")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(
            total=max(workflow.total_tasks, 1), completed=workflow.finished_tasks, width=40
        ),
        f"{workflow.finished_tasks}/{workflow.total_tasks} tasks",
        _elapsed(workflow),
    )
    counts = Text("  ".join(f"{s} {n}" for s, n in sorted(workflow.task_counts.items())))
    running = [t for t in tasks if t.status == "Running"]
    lines: list[RenderableType] = [header, bar, counts]
    if running:
        names = ", ".join(_running_name(t) for t in running[:_RUNNING_SHOWN])
        more = len(running) - _RUNNING_SHOWN
        lines.append(
            Text("running: ", "cyan") + Text(names + (f" +{more} more" if more > 0 else ""))
        )
    return Group(*lines)


def _state(task: Task) -> str:
    if task.status == "Pending" and task.attempts > 0 and task.error:
        return "Retrying"
    return task.status


def _detail(task: Task, state: str) -> str:
    attempt = f"attempt {task.attempts}/{task.max_attempts}"
    if state == "Running":
        return attempt
    if state == "Completed":
        return _one_line(task.output or "")
    if state == "Retrying":
        return f"{attempt} failed, will retry: {_one_line(task.error or '')}"
    if state == "Failed":
        return f"{attempt}: {_one_line(task.error or 'no error message')}"
    return _one_line(task.error or "")


def _when(task: Task, state: str) -> datetime:
    stamp = task.started_at if state == "Running" else task.completed_at
    return stamp or datetime.now(UTC)


def _workflow_when(workflow: Workflow) -> datetime:
    if workflow.is_final and workflow.completed_at is not None:
        return workflow.completed_at
    return workflow.started_at or workflow.created_at


def _running_name(task: Task) -> str:
    return task.name if task.attempts <= 1 else f"{task.name} (attempt {task.attempts})"


def _elapsed(workflow: Workflow) -> str:
    if workflow.started_at is None:
        return "waiting"
    end = workflow.completed_at or datetime.now(UTC)
    return format_duration((end - workflow.started_at).total_seconds())


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _DETAIL_CHARS else flat[: _DETAIL_CHARS - 1] + "…"


def _clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S")


# -- batches --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """A batch task that failed, or whose undo did not complete."""

    operation: str
    subject: str
    result: OperationResult

    @property
    def undo_failed(self) -> bool:
        undo = self.result.compensation
        return undo is not None and undo.status in ("Failed", "Cancelled")


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """The batch as it ended, with every operation's results."""

    batch: Batch

    @property
    def succeeded(self) -> bool:
        return self.batch.status == "Completed"

    @property
    def rolled_back(self) -> bool:
        """It failed, and everything it had done was undone."""
        return self.batch.status == "RolledBack"

    @property
    def failures(self) -> list[TaskFailure]:
        """Failed tasks, then tasks whose undo failed (not the ones merely cancelled)."""
        found = [
            TaskFailure(op.id, subject, result)
            for op in self.batch.operations
            for subject, result in (op.results or {}).items()
            if result.status == "Failed"
        ]
        undone = [
            TaskFailure(op.id, subject, result)
            for op in self.batch.operations
            for subject, result in (op.results or {}).items()
            if result.compensation is not None
            and result.compensation.status in ("Failed", "Cancelled")
        ]
        return found + undone


@dataclass(frozen=True, slots=True)
class BatchChange:
    """One observed change: of an operation (`subject` None) or of one of its tasks."""

    operation: str
    subject: str | None
    #: An operation or task status, "Retrying", "RolledBack" (a task's work undone) or
    #: "UndoFailed".
    state: str
    detail: str
    #: The task whose change this is, for a retry's attempt count.
    task_id: str | None = None


class BatchChangeLog:
    """Remembers each operation's status and each task's (status, error, undo status)."""

    def __init__(self) -> None:
        self._operations: dict[str, str] = {}
        self._tasks: dict[tuple[str, str], tuple[str, str | None, str | None]] = {}

    def changes(self, batch: Batch) -> list[BatchChange]:
        """Task retries and failures, then undos, then operation changes."""
        tasks: list[BatchChange] = []
        operations: list[BatchChange] = []
        undos: list[BatchChange] = []
        for op in batch.operations:
            for subject, result in (op.results or {}).items():
                undo = result.compensation
                key = (result.status, result.error, undo.status if undo else None)
                before = self._tasks.get((op.id, subject), ("Pending", None, None))
                self._tasks[(op.id, subject)] = key
                if key == before:
                    continue
                if key[:2] != before[:2]:
                    if result.status == "Pending" and result.error:
                        detail = f"failed, will retry: {_one_line(result.error)}"
                        tasks.append(
                            BatchChange(op.id, subject, "Retrying", detail, result.task_id)
                        )
                    elif result.status == "Failed":
                        detail = _one_line(result.error or "no error message")
                        tasks.append(BatchChange(op.id, subject, "Failed", detail, result.task_id))
                if undo is not None and key[2] != before[2]:
                    if undo.status == "Completed":
                        undos.append(BatchChange(op.id, subject, "RolledBack", "undone"))
                    elif undo.status in ("Failed", "Cancelled"):
                        detail = f"undo {undo.status.lower()}: {_one_line(undo.error or '')}"
                        undos.append(BatchChange(op.id, subject, "UndoFailed", detail))
            if self._operations.get(op.id, "Pending") != op.status:
                self._operations[op.id] = op.status
                operations.append(BatchChange(op.id, None, op.status, _operation_counts(op)))
        return tasks + undos + operations


def watch_batch(
    client: OrchestratorClient,
    batch_id: str,
    *,
    console: Console,
    out: TextIO | None = None,
    interval: float = 0.3,
) -> BatchOutcome:
    """Follow the batch until its status is final; return how it ended.

    As `watch`: the live display when `console` is a terminal, else lines to `out`
    (default stdout). API errors and `KeyboardInterrupt` propagate.
    """
    if console.is_terminal:
        return _watch_batch_live(client, batch_id, console, interval)
    return _watch_batch_plain(client, batch_id, out or sys.stdout, interval)


def _watch_batch_plain(
    client: OrchestratorClient, batch_id: str, out: TextIO, interval: float
) -> BatchOutcome:
    log = BatchChangeLog()
    last_status = ""
    while True:
        batch = client.get_batch(batch_id)
        clock = _clock(datetime.now(UTC))
        lines: list[str] = []
        status_line = ""
        if batch.status != last_status:
            last_status = batch.status
            done = f"{batch.finished_operations}/{len(batch.operations)} operations"
            status_line = f"{clock} batch      {batch.status:<11} {batch.name or ''}  {done}"
        if status_line and not batch.is_final:
            lines.append(status_line)
        for change in log.changes(batch):
            what = change.operation if change.subject is None else f"{change.operation}/"
            what += change.subject or ""
            detail = _batch_detail(client, change)
            lines.append(f"{clock} {change.state:<11} {what}  {detail}".rstrip())
        if status_line and batch.is_final:
            lines.append(status_line)
        for line in lines:
            print(line, file=out)
        out.flush()
        if batch.is_final:
            return BatchOutcome(batch)
        time.sleep(interval)


def _watch_batch_live(
    client: OrchestratorClient, batch_id: str, console: Console, interval: float
) -> BatchOutcome:
    log = BatchChangeLog()
    batch = client.get_batch(batch_id)
    with Live(_batch_panel(batch), console=console, transient=False) as live:
        while True:
            for change in log.changes(batch):
                if change.subject is None or change.state == "RolledBack":
                    continue
                style = STATUS_STYLES.get(change.state, "")
                line = Text.assemble(
                    (f"{change.state:<11} ", style),
                    (f"{change.operation}/{change.subject}", "bold"),
                    "  ",
                )
                line.append(_batch_detail(client, change))
                live.console.print(line)
            live.update(_batch_panel(batch))
            if batch.is_final:
                return BatchOutcome(batch)
            time.sleep(interval)
            batch = client.get_batch(batch_id)


def _batch_detail(client: OrchestratorClient, change: BatchChange) -> str:
    """A retry with its attempt numbers, read from the task; anything else as it is."""
    if change.state != "Retrying" or change.task_id is None:
        return change.detail
    task = client.get_task(change.task_id)
    return f"attempt {task.attempts}/{task.max_attempts} {change.detail}"


def _batch_panel(batch: Batch) -> RenderableType:
    header = Text.assemble(
        (batch.name or "batch", "bold"),
        f"  {batch.batch_id}  ",
        (batch.status, STATUS_STYLES.get(batch.status, "")),
        f"  {batch.finished_operations}/{len(batch.operations)} operations",
    )
    if not batch.is_final and batch.created_at is not None:
        elapsed = (datetime.now(UTC) - batch.created_at).total_seconds()
        header.append(f"  {format_duration(max(elapsed, 0.0))}", "dim")
    rows = Table.grid(padding=(0, 1))
    for op in batch.operations:
        rows.add_row(
            Text(op.id, "bold"),
            Text(op.status, STATUS_STYLES.get(op.status, "")),
            ProgressBar(total=100.0, completed=op.progress, width=30),
            f"{op.progress:5.1f}%",
            _operation_counts(op),
        )
    lines: list[RenderableType] = [header, rows]
    if batch.error:
        lines.append(Text(_one_line(batch.error), "red" if batch.status != "RolledBack" else ""))
    return Group(*lines)


def _operation_counts(op: BatchOperation) -> str:
    """`2/3 tasks: Completed 2, Running 1; undone 2`."""
    results = list((op.results or {}).values())
    if not results:
        return f"{op.progress:.0f}%"
    ended = sum(1 for r in results if r.status in ("Completed", "Failed", "Cancelled"))
    counts = Counter(r.status for r in results)
    text = f"{ended}/{len(results)} tasks: " + ", ".join(
        f"{status} {n}" for status, n in sorted(counts.items())
    )
    undone = sum(1 for r in results if r.compensation and r.compensation.status == "Completed")
    return text + (f"; undone {undone}" if undone else "")
