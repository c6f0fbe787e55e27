"""Recovery and state: `checkpoint`, `rollback`, `restore` and `state`.

- `checkpoint create|list|show|delete`: marks in time to roll back to or restore from
  (deleting one lets retention prune the work it kept).
- `rollback --checkpoint ID | --operations A,B`: undo, through compensation tasks, the
  work completed since a checkpoint or by the named batch operations; exit 0 when the
  rollback succeeded (or there was nothing to undo), else 1.
- `restore ID`: reset the recorded inventory to the checkpoint's (the infrastructure
  itself is not touched).
- `state health|metrics|statistics|progress`: what the orchestrator says about itself
  and about a workflow's progress; `state health` exits 1 when not Healthy.
"""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import (
    Options,
    confirm,
    json_option,
    pass_options,
    print_json,
    stdout,
    yes_option,
)
from orchestrator.cli.ids import CHECKPOINT_ID, WORKFLOW_ID
from orchestrator.cli.tables import detail, page_note, short_id, when
from orchestrator.client import Checkpoint, OrchestratorClient, RollbackResult
from orchestrator.clock import format_duration
from orchestrator.progress import STATUS_STYLES, watch

# -- checkpoints ----------------------------------------------------------------------------


@click.group()
def checkpoint() -> None:
    """Checkpoints: the recorded state at a moment, to roll back to or restore."""


@checkpoint.command("create")
@click.argument("name")
@click.option("-d", "--description", default="", help="What the checkpoint is for.")
@json_option
@pass_options
def create_checkpoint(options: Options, name: str, description: str) -> None:
    """Create a checkpoint named NAME; print its id."""
    with options.client() as client:
        checkpoint_id = client.create_checkpoint(name, description)
    if options.json:
        print_json({"id": checkpoint_id, "name": name, "description": description})
    else:
        click.echo(checkpoint_id)


@checkpoint.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@json_option
@pass_options
def list_checkpoints(options: Options, limit: int, offset: int, wide: bool) -> None:
    """List checkpoints, newest first."""
    with options.client() as client:
        page = client.list_checkpoints(limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(checkpoint_table(page.items, wide=wide))
    click.echo(page_note(page, "checkpoints"))


@checkpoint.command("show")
@click.argument("checkpoint_id", metavar="ID", type=CHECKPOINT_ID)
@json_option
@pass_options
def show_checkpoint(options: Options, checkpoint_id: str) -> None:
    """Show a checkpoint, with what a rollback to it would undo."""
    with options.client() as client:
        found = client.get_checkpoint(checkpoint_id)
    if options.json:
        print_json(found)
        return
    stdout.print(detail(found, skip=("undo", "undo_blocked")))
    for line in _would_undo(found):
        click.echo(line)


def _would_undo(found: Checkpoint) -> list[str]:
    """What a rollback to the checkpoint would run now, a line each."""
    if found.undo_blocked:
        return [f"a rollback to it cannot run now: {found.undo_blocked}"]
    if not found.undo:
        return ["a rollback to it has nothing to undo"]
    more = (found.operations_count or 0) - len(found.undo)
    lines = [f"a rollback to it would run, newest work first ({len(found.undo)}):"]
    lines += [f"  {name}" for name in found.undo]
    if more > 0:
        lines.append(f"  … and {more} more")
    return lines


@checkpoint.command("delete")
@click.argument("checkpoint_id", metavar="ID", type=CHECKPOINT_ID)
@yes_option
@json_option
@pass_options
def delete_checkpoint(options: Options, checkpoint_id: str, yes: bool) -> None:
    """Delete checkpoint ID: nothing rolls back or restores to it any more, and retention
    may prune the finished work it kept."""
    confirm(yes, f"delete checkpoint {checkpoint_id}?")
    with options.client() as client:
        message = client.delete_checkpoint(checkpoint_id)
    if options.json:
        print_json({"id": checkpoint_id, "deleted": True})
    else:
        click.echo(message)


def checkpoint_table(checkpoints: list[Checkpoint], *, wide: bool = False) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "name", "created", "size", "seq", "description"):
        table.add_column(column, no_wrap=column not in ("name", "description"))
    for c in checkpoints:
        table.add_row(
            short_id(c.id, wide), c.name, when(c.created_at), c.size, str(c.seq), c.description
        )
    return table


# -- rollback and restore -------------------------------------------------------------------


@click.command()
@click.option("--checkpoint", "checkpoint_id", metavar="ID", help="Undo what ran since it.")
@click.option(
    "--operations",
    metavar="A,B",
    help="Undo these batch operations: `op` (latest batch with it) or `BATCH_ID:op`.",
)
@yes_option
@json_option
@pass_options
def rollback(
    options: Options, checkpoint_id: str | None, operations: str | None, yes: bool
) -> None:
    """Undo completed work, newest first, by compensation tasks; exit 0 if all was undone."""
    if (checkpoint_id is None) == (operations is None):
        raise click.UsageError("give exactly one of --checkpoint ID or --operations A,B")
    operation_ids = None
    if operations is not None:
        operation_ids = [op.strip() for op in operations.split(",") if op.strip()]
        if not operation_ids:
            raise click.UsageError("--operations: name at least one operation")
    with options.client() as client:
        if checkpoint_id is not None:
            checkpoint_id = client.resolve_id("checkpoint", checkpoint_id)
            if not options.json:  # what will be undone, before the question
                for line in _would_undo(client.get_checkpoint(checkpoint_id)):
                    click.echo(line, err=True)
        since = f"since checkpoint {checkpoint_id}" if checkpoint_id else f"by {operations}"
        confirm(yes, f"undo the work completed {since}?")
        result = client.rollback(checkpoint_id=checkpoint_id, operation_ids=operation_ids)
        if result.success is None and result.rollback_id is not None:
            # The server stopped waiting; the rollback runs on, as a workflow.
            result = _follow_rollback(client, result, options.json)
        undone = _undone(client, result) if not options.json else []
    if options.json:
        print_json(result)
    _report_rollback(result, options.json)
    for line in undone:
        click.echo(line)
    sys.exit(0 if result.success else 1)


def _undone(client: OrchestratorClient, result: RollbackResult) -> list[str]:
    """A line per compensation task of the rollback: what it undid, and how it ended."""
    if result.rollback_id is None or not result.operations_executed + result.operations_failed:
        return []
    tasks = client.all_tasks(workflow_id=result.rollback_id)
    return [f"  {task.status.lower():<9} {task.name}" for task in tasks]


def _follow_rollback(
    client: OrchestratorClient, result: RollbackResult, as_json: bool
) -> RollbackResult:
    assert result.rollback_id is not None
    click.echo(f"rollback {result.rollback_id} still {result.status}; following it", err=True)
    try:
        # Progress on stderr: stdout is for the result (as JSON with --json).
        console = Console(stderr=True, highlight=False) if as_json else stdout
        out = sys.stderr if as_json else None
        outcome = watch(client, result.rollback_id, console=console, out=out)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped watching; rollback {result.rollback_id} keeps running. "
            f"See it with: provisioning workflow show {result.rollback_id}",
            err=True,
        )
        sys.exit(130)
    ended = outcome.workflow
    counts = ended.task_counts
    took = result.duration
    if ended.started_at and ended.completed_at:
        took = (ended.completed_at - ended.started_at).total_seconds()
    return RollbackResult(
        rollback_id=result.rollback_id,
        success=ended.status == "Completed",
        operations_executed=counts.get("Completed", 0),
        operations_failed=counts.get("Failed", 0) + counts.get("Cancelled", 0),
        duration=round(took, 3),
        status=ended.status,
    )


def _report_rollback(result: RollbackResult, as_json: bool) -> None:
    if result.status == "Completed" and not result.operations_executed + result.operations_failed:
        click.echo("nothing to roll back: no completed work left to undo", err=as_json)
        return
    summary = (
        f"rollback {result.rollback_id} {result.status}: "
        f"{result.operations_executed} undone, {result.operations_failed} failed "
        f"in {format_duration(result.duration)}"
    )
    if result.success:
        click.echo(summary, err=as_json)
        return
    click.echo(f"error: {summary}", err=True)
    click.echo(
        f"  the compensation tasks: provisioning tasks list --workflow {result.rollback_id}",
        err=True,
    )


@click.command()
@click.argument("checkpoint_id", metavar="ID", type=CHECKPOINT_ID)
@json_option
@pass_options
def restore(options: Options, checkpoint_id: str) -> None:
    """Reset the recorded inventory to checkpoint ID's (the infrastructure is untouched)."""
    with options.client() as client:
        message = client.restore(checkpoint_id)
    if options.json:
        print_json({"checkpoint_id": checkpoint_id, "message": message})
    else:
        click.echo(message)


# -- state ----------------------------------------------------------------------------------


@click.group()
def state() -> None:
    """The orchestrator's health, metrics and statistics, and workflow progress."""


@state.command("health")
@json_option
@pass_options
def health(options: Options) -> None:
    """Check storage, executor and event pipeline; exit 1 unless Healthy."""
    with options.client() as client:
        found = client.system_health()
    if options.json:
        print_json(found)
    else:
        grid = _grid()
        grid.add_row("overall", _status(found.overall_status), "")
        for name, status in found.components.items():
            grid.add_row(name, _status(status), found.details.get(name, ""))
        for name, kind in found.providers.items():
            grid.add_row(f"provider {name}", kind, "")
        grid.add_row("checked", when(found.last_check), "")
        stdout.print(grid)
    sys.exit(0 if found.overall_status == "Healthy" else 1)


@state.command("metrics")
@json_option
@pass_options
def metrics(options: Options) -> None:
    """Workflow counts, the executor's queue and the machine's load."""
    with options.client() as client:
        found = client.system_metrics()
    if options.json:
        print_json(found)
        return
    load = found.system_load
    grid = _grid()
    grid.add_row("workflows", str(found.total_workflows), "")
    grid.add_row("  active", str(found.active_workflows), "")
    grid.add_row("  completed", str(found.completed_workflows), "")
    grid.add_row("  failed", str(found.failed_workflows), "")
    grid.add_row("tasks running", str(found.running_tasks), "")
    grid.add_row("tasks queued", str(found.queued_tasks), "")
    grid.add_row("cpu", f"{load.cpu_usage:.1f}%", "")
    grid.add_row("memory", f"{load.memory_usage:.0f} MB", f"{load.memory_percent:.1f}%")
    grid.add_row("disk", f"{load.disk_usage:.1f}%", "data directory's disk")
    stdout.print(grid)


@state.command("statistics")
@json_option
@pass_options
def statistics(options: Options) -> None:
    """State and rollback statistics (JSON: {"state": …, "rollback": …})."""
    with options.client() as client:
        found = client.state_statistics()
        rollbacks = client.rollback_statistics()
    if options.json:
        print_json({"state": found, "rollback": rollbacks})
        return
    grid = _grid()
    grid.add_row("workflows", str(found.total_workflows), _by_status(found.workflows_by_status))
    grid.add_row("average duration", _seconds(found.average_workflow_duration), "")
    grid.add_row("storage", found.storage_usage, f"{found.storage_bytes} bytes")
    grid.add_row("checkpoints", str(rollbacks.total_checkpoints), "")
    grid.add_row("rollbacks", str(rollbacks.total_rollbacks), "")
    rate = rollbacks.success_rate
    grid.add_row("rollback success", "-" if rate is None else f"{rate:.1f}%", "")
    grid.add_row("average rollback", _seconds(rollbacks.average_rollback_time), "")
    stdout.print(grid)


@state.command("progress")
@click.argument("workflow_id", metavar="WORKFLOW_ID", type=WORKFLOW_ID)
@json_option
@pass_options
def progress(options: Options, workflow_id: str) -> None:
    """A workflow's (or batch's) progress: steps done, current step, time left."""
    with options.client() as client:
        found = client.workflow_progress(workflow_id)
    if options.json:
        print_json(found)
        return
    grid = _grid()
    grid.add_row("workflow", found.workflow_id, "")
    grid.add_row("status", _status(found.status), "")
    steps = f"{found.completed_steps}/{found.total_steps} steps"
    grid.add_row("progress", f"{found.progress:.1f}%", steps)
    grid.add_row("current step", found.current_step or "-", "")
    grid.add_row("time left", _seconds(found.estimated_time_remaining, unknown="unknown"), "")
    stdout.print(grid)


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(style="dim")
    return grid


def _status(status: str) -> Text:
    styles: dict[str, str] = {**STATUS_STYLES, "Healthy": "green", "Unhealthy": "red"}
    return Text(status, styles.get(status, ""))


def _seconds(value: float | None, unknown: str = "-") -> str:
    return unknown if value is None else format_duration(value)


def _by_status(counts: dict[str, int]) -> str:
    return ", ".join(f"{status} {n}" for status, n in sorted(counts.items()))
