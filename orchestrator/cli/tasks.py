"""`provisioning tasks`: list and show tasks (`GET /tasks`, `GET /tasks/{id}`)."""

from __future__ import annotations

import click

from orchestrator.cli.common import Options, json_option, pass_options, print_json, stdout
from orchestrator.cli.ids import TASK_ID, WORKFLOW_ID
from orchestrator.cli.tables import detail, page_note, task_table


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
@json_option
@pass_options
def list_tasks(
    options: Options,
    status: str | None,
    workflow_id: str | None,
    limit: int,
    offset: int,
    wide: bool,
) -> None:
    """List tasks, oldest first."""
    with options.client() as client:
        page = client.list_tasks(status=status, workflow_id=workflow_id, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(task_table(page.items, wide=wide))
    click.echo(page_note(page, "tasks"))


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
