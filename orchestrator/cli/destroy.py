"""Deleting what workflows created: `servers delete NAME…` and `destroy --infra NAME`.

Both ask the orchestrator for the plan first (`POST /resources/destroy` in check mode:
a line per resource, `- delete server web-01`, and `!` for one that cannot be deleted
this way, with why), then, once confirmed (`--yes`, or on a terminal), submit the
workflow of compensations that deletes them, and follow it until it ends: exit 0 when
it Completed, else 1. `--check` prints the plan only.
"""

from __future__ import annotations

import sys

import click
import msgspec

from orchestrator.cli.common import Options, confirm, json_option, pass_options, yes_option
from orchestrator.cli.workflows import follow, servers, show_plan
from orchestrator.client import DestroyIn


def _delete(options: Options, body: DestroyIn, what: str, only_plan: bool, yes: bool) -> None:
    with options.client() as client:
        planned = client.destroy(msgspec.structs.replace(body, check_mode=True)).plan
        # With -o json, stdout is for one document: the plan, or the ended workflow.
        show_plan(options, planned, title=f"Plan to {what}:", data=only_plan)
        if only_plan:
            return
        if not planned.delete:
            click.echo("nothing to delete", err=True)
            sys.exit(1 if planned.skipped else 0)
        count = planned.delete
        confirm(yes, f"delete {count} resource{'s' if count != 1 else ''} ({what})?")
        workflow_id = client.destroy(body).workflow_id
        if workflow_id is None:  # deleted meanwhile
            click.echo("nothing to delete any more", err=True)
            return
        click.echo(f"workflow {workflow_id} submitted", err=options.json)
        follow(options, client, workflow_id)


@servers.command("delete")
@click.argument("names", metavar="NAME…", nargs=-1, required=True)
@click.option("--infra", help="Only servers this infra declares.")
@click.option("--provider", metavar="INSTANCE", help="Only this provider instance's.")
@click.option("--check", is_flag=True, help="Print the plan only; delete nothing.")
@yes_option
@json_option
@pass_options
def delete_servers(
    options: Options,
    names: tuple[str, ...],
    infra: str | None,
    provider: str | None,
    check: bool,
    yes: bool,
) -> None:
    """Delete servers a workflow created, by undoing that work (asks unless --yes)."""
    body = DestroyIn(infra=infra, names=list(names), kind="server", provider=provider)
    _delete(options, body, f"delete server {', '.join(names)}", check, yes)


@click.command("destroy")
@click.option("--infra", required=True, help="Infra name under <workspace>/infra/.")
@click.option("--settings", metavar="FILE", help="Settings file inside the infra.")
@click.option("--check", is_flag=True, help="Print the plan only; delete nothing.")
@yes_option
@json_option
@pass_options
def destroy(options: Options, infra: str, settings: str | None, check: bool, yes: bool) -> None:
    """Delete every recorded resource an infra declares, newest work first, by undoing
    the work that created it (asks unless --yes)."""
    body = DestroyIn(infra=infra, settings=settings)
    _delete(options, body, f"destroy infra {infra}", check, yes)
