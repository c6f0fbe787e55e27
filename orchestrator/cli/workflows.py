"""`provisioning workflow`: submit, list, show, cancel and follow workflows.

A submission without `--wait` prints only the workflow id on stdout, for scripts. With
`--wait`, and in `workflow wait`, the workflow is followed until it ends (see
`orchestrator.progress`): exit 0 when it Completed, 1 when it Failed or was Cancelled
(the failed tasks' errors on stderr), 130 on Ctrl-C, which stops watching, not the work.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast

import click
from rich.console import Group

from orchestrator.cli.common import (
    Options,
    json_option,
    pass_options,
    print_json,
    progress_console,
    say,
    stdout,
)
from orchestrator.cli.ids import WORKFLOW_ID
from orchestrator.cli.tables import detail, page_note, task_table, workflow_table
from orchestrator.cli.watching import Snapshot, watch_list
from orchestrator.client import OrchestratorClient, Plan, Workflow
from orchestrator.clock import format_duration
from orchestrator.plan import line as plan_line
from orchestrator.progress import watch

F = TypeVar("F", bound=Callable[..., Any])
#: How often a check-mode submission asks whether its workflow has ended.
_POLL = 0.1


@click.group()
def workflow() -> None:
    """Workflows: submitted units of work, each a graph of tasks."""


def _submission(command: F) -> F:
    """The options every `workflow … create` shares."""
    decorators: tuple[Callable[[Any], Any], ...] = (
        click.option("--infra", required=True, help="Infra name under <workspace>/infra/."),
        click.option("--settings", metavar="FILE", help="Settings file inside the infra."),
        click.option("--check", is_flag=True, help="Check mode: plan, change nothing."),
        click.option("--wait", is_flag=True, help="Follow the workflow until it ends."),
        json_option,
        pass_options,
    )
    decorated: Any = command
    for decorate in reversed(decorators):
        decorated = decorate(decorated)
    return cast(F, decorated)


def _operation(command: F) -> F:
    choice = click.Choice(["create", "delete"])
    return click.option("--operation", type=choice, default="create", show_default=True)(command)


@workflow.group()
def servers() -> None:
    """An infra's servers."""


@servers.command("create")
@_submission
def create_servers(
    options: Options, infra: str, settings: str | None, check: bool, wait: bool
) -> None:
    """Create the servers an infra's settings declare."""
    with options.client() as client:
        workflow_id = client.create_servers(infra, settings=settings, check_mode=check)
        submitted(options, client, workflow_id, wait, check=check)


@workflow.group()
def taskserv() -> None:
    """Task services installed on an infra's servers."""


@taskserv.command("create")
@click.argument("name", metavar="TASKSERV")
@_operation
@_submission
def create_taskserv(
    options: Options,
    name: str,
    operation: str,
    infra: str,
    settings: str | None,
    check: bool,
    wait: bool,
) -> None:
    """Install (or with --operation delete, remove) a taskserv on an infra's servers."""
    with options.client() as client:
        workflow_id = client.create_taskserv(
            name, infra, operation=operation, settings=settings, check_mode=check
        )
        submitted(options, client, workflow_id, wait, check=check)


@workflow.group()
def cluster() -> None:
    """Clusters built on an infra."""


@cluster.command("create")
@click.argument("cluster_type", metavar="CLUSTER_TYPE")
@_operation
@_submission
def create_cluster(
    options: Options,
    cluster_type: str,
    operation: str,
    infra: str,
    settings: str | None,
    check: bool,
    wait: bool,
) -> None:
    """Create (or with --operation delete) an infra's cluster of CLUSTER_TYPE."""
    with options.client() as client:
        workflow_id = client.create_cluster(
            cluster_type, infra, operation=operation, settings=settings, check_mode=check
        )
        submitted(options, client, workflow_id, wait, check=check)


@workflow.command("list")
@click.option("--status", help="Pending, Running, Completed, Failed, Cancelled, …")
@click.option("--kind", help="servers, taskserv, cluster, custom, …")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@click.option("--watch", "-w", is_flag=True, help="Redraw as it changes, until Ctrl-C.")
@json_option
@pass_options
def list_workflows(
    options: Options,
    status: str | None,
    kind: str | None,
    limit: int,
    offset: int,
    wide: bool,
    watch: bool,
) -> None:
    """List workflows, newest first."""
    with options.client() as client:

        def read() -> Snapshot:
            page = client.list_workflows(status=status, kind=kind, limit=limit, offset=offset)
            note = page_note(page, "workflows")
            if not page.items:
                return Snapshot(page.items, note)
            return Snapshot(page.items, Group(workflow_table(page.items, wide=wide), note))

        if watch:
            watch_list(options, read, "the workflows")
            return
        page = client.list_workflows(status=status, kind=kind, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(workflow_table(page.items, wide=wide))
    click.echo(page_note(page, "workflows"))


@workflow.command("show")
@click.argument("workflow_id", metavar="ID", type=WORKFLOW_ID)
@json_option
@pass_options
def show_workflow(options: Options, workflow_id: str) -> None:
    """Show a workflow and its first tasks."""
    with options.client() as client:
        found = client.get_workflow(workflow_id)
        if options.json:
            print_json(found)
            return
        page = client.list_tasks(workflow_id=workflow_id, limit=50)
    stdout.print(detail(found))
    if page.items:
        click.echo()
        stdout.print(task_table(page.items))
    if page.next:
        click.echo(
            f"{page_note(page, 'tasks')}; see: provisioning tasks list --workflow {found.id}"
        )


@workflow.command("cancel")
@click.argument("workflow_id", metavar="ID", type=WORKFLOW_ID)
@pass_options
def cancel_workflow(options: Options, workflow_id: str) -> None:
    """Cancel a workflow: pending tasks never start, running ones are stopped."""
    with options.client() as client:
        click.echo(client.cancel_workflow(workflow_id))


@workflow.command("wait")
@click.argument("workflow_id", metavar="ID", type=WORKFLOW_ID)
@json_option
@pass_options
def wait_workflow(options: Options, workflow_id: str) -> None:
    """Follow a workflow until it ends; exit 0 if it Completed, else 1. With --json (or
    -o yaml), progress goes to stderr and the ended workflow to stdout."""
    with options.client() as client:
        follow(options, client, workflow_id)


def submitted(
    options: Options,
    client: OrchestratorClient,
    workflow_id: str,
    wait: bool,
    *,
    check: bool = False,
) -> None:
    """A submitted workflow: its id, or with `wait` followed until it ends (and exit).
    In check mode: its plan, once it has ended (with `wait`, after following it)."""
    if check:
        if wait:
            click.echo(f"workflow {workflow_id} submitted", err=options.json)
            ended, code = _watched(options, client, workflow_id, data=False)
        else:
            ended, code = _ended(client, workflow_id), 0
        sys.exit(max(code, show_plan(options, client.workflow_plan(ended.id))))
    if not wait:
        say(options, {"workflow_id": workflow_id}, workflow_id)
        return
    click.echo(f"workflow {workflow_id} submitted", err=options.json)
    follow(options, client, workflow_id)


def _ended(client: OrchestratorClient, workflow_id: str) -> Workflow:
    """The workflow once it has ended (a check-mode one takes moments), quietly."""
    found = client.get_workflow(workflow_id)
    while not found.is_final:
        time.sleep(_POLL)
        found = client.get_workflow(workflow_id)
    return found


def show_plan(options: Options, plan: Plan, *, title: str | None = None, data: bool = True) -> int:
    """Print a plan: as text, or with -o json|yaml as data (unless not `data`: then the
    text goes to stderr, stdout being kept for other data); 1 when some of it failed
    to plan."""
    if options.json and data:
        print_json(plan)
        return 1 if plan.errors else 0
    err = options.json
    if title is None and plan.workflow_id is not None:
        title = f"Plan of check-mode workflow {plan.workflow_id} (nothing was changed):"
    if title:
        click.echo(title, err=err)
    for entry in plan.entries:
        click.echo(f"  {plan_line(entry)}", err=err)
    for error in plan.errors:
        click.echo(f"  ! {error.task}: failed to plan: {error.error}", err=err)
    click.echo(plan.summary(), err=err)
    return 1 if plan.errors else 0


def follow(options: Options, client: OrchestratorClient, workflow_id: str) -> NoReturn:
    sys.exit(_watched(options, client, workflow_id)[1])


def _watched(
    options: Options, client: OrchestratorClient, workflow_id: str, *, data: bool = True
) -> tuple[Workflow, int]:
    """Follow the workflow to its end, print how it ended (with `data` and -o json, the
    ended workflow on stdout); it and the exit status."""
    console, out = progress_console(options)
    try:
        outcome = watch(client, workflow_id, console=console, out=out)
    except KeyboardInterrupt:
        click.echo(
            f"\nstopped watching; workflow {workflow_id} keeps running. "
            f"To cancel it: provisioning workflow cancel {workflow_id}",
            err=True,
        )
        sys.exit(130)
    ended = outcome.workflow
    took = ""
    if ended.started_at and ended.completed_at:
        took = f" in {format_duration((ended.completed_at - ended.started_at).total_seconds())}"
    summary = (
        f"workflow {ended.id} {ended.status}: {ended.finished_tasks}/{ended.total_tasks} tasks"
    )
    if options.json and data:
        print_json(ended)
    if outcome.succeeded:
        check = " (check mode: nothing was changed)" if ended.check_mode else ""
        click.echo(f"{summary}{took}{check}", err=options.json)
        return ended, 0
    failed = outcome.failed_tasks
    reason = f": {ended.error}" if ended.error and not failed else ""
    click.echo(f"error: {summary}{took}{reason}", err=True)
    for task in failed:
        click.echo(f"  {task.name} ({task.id}): {task.error}", err=True)
    return ended, 1
