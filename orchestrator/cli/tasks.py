"""`provisioning tasks`: list and show tasks (`GET /tasks`, `GET /tasks/{id}`).

`tasks list` shows the newest first: the API lists oldest first, so the CLI reads the
total, then the page that ends where the user's page starts, and turns it round.
"""

from __future__ import annotations

import click
from rich.console import Group

from orchestrator.cli.common import Options, json_option, pass_options, print_json, stdout
from orchestrator.cli.ids import TASK_ID, WORKFLOW_ID
from orchestrator.cli.tables import detail, page_note, task_table
from orchestrator.cli.watching import Snapshot, watch_list
from orchestrator.client import OrchestratorClient, Page, Task


@click.group()
def tasks() -> None:
    """Tasks: the units of work inside workflows."""


@tasks.command("list")
@click.option("--status", help="Pending, Running, Completed, Failed or Cancelled.")
@click.option(
    "--workflow", "workflow_id", metavar="ID", type=WORKFLOW_ID, help="Only this workflow's tasks."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@click.option("--watch", "-w", is_flag=True, help="Redraw as it changes (until --workflow's ends).")
@json_option
@pass_options
def list_tasks(
    options: Options,
    status: str | None,
    workflow_id: str | None,
    limit: int,
    offset: int,
    wide: bool,
    watch: bool,
) -> None:
    """List tasks, newest first."""
    with options.client() as client:

        def read() -> Snapshot:
            page = newest_tasks(client, status, workflow_id, limit, offset)
            ended = workflow_id is not None and client.get_workflow(workflow_id).is_final
            view = Group(task_table(page.items, wide=wide), page_note(page, "tasks"))
            return Snapshot(page.items, view if page.items else page_note(page, "tasks"), ended)

        if watch:
            watch_list(options, read, "the tasks")
            return
        page = newest_tasks(client, status, workflow_id, limit, offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(task_table(page.items, wide=wide))
    click.echo(page_note(page, "tasks"))


def newest_tasks(
    client: OrchestratorClient, status: str | None, workflow_id: str | None, limit: int, offset: int
) -> Page[Task]:
    """The page of tasks `offset` rows from the newest, newest first."""
    total = client.list_tasks(status=status, workflow_id=workflow_id, limit=1).total
    end = max(0, total - offset)
    start = max(0, end - limit)
    items: list[Task] = []
    if end > start:
        found = client.list_tasks(
            status=status, workflow_id=workflow_id, limit=end - start, offset=start
        )
        items = list(reversed(found.items))
    following = f"--offset {offset + len(items)}" if start > 0 else None
    return Page(items=items, total=total, limit=limit, offset=offset, next=following)


@tasks.command("show")
@click.argument("task_id", metavar="ID", type=TASK_ID)
@json_option
@pass_options
def show_task(options: Options, task_id: str) -> None:
    """Show every field of a task (a workflow id shows the workflow in task shape)."""
    with options.client() as client:
        task = client.get_task(task_id)
    if options.json:
        print_json(task)
        return
    stdout.print(detail(task))
