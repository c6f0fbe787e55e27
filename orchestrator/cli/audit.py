"""`provisioning audit`: read the control center's audit log through its API (`logs`), and
verify its hash chain in the database itself (`verify`, `cli/owner.py`)."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from orchestrator.cc_client import AuditRecord
from orchestrator.cli.common import (
    Options,
    cc_url_option,
    json_option,
    pass_options,
    print_json,
    stdout,
)
from orchestrator.cli.owner import audit_verify
from orchestrator.cli.tables import page_note, plain_table, short_id, when


@click.group()
def audit() -> None:
    """The audit log: read it, and verify its hash chain."""


audit.add_command(audit_verify)  # on the database itself, not through the API


@audit.command("logs")
@click.option("--user-id", help="Only this user's records.")
@click.option("--action", help="Only this action (users.create, auth.login, …).")
@click.option("--resource", help="This resource, or a prefix ending in * (users:*).")
@click.option("--from", "since", metavar="TIME", help="From (ISO 8601 with a zone).")
@click.option("--to", "until", metavar="TIME", help="Until (ISO 8601 with a zone).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@cc_url_option
@json_option
@pass_options
def audit_logs(
    options: Options,
    user_id: str | None,
    action: str | None,
    resource: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    offset: int,
    wide: bool,
) -> None:
    """Audit records, newest first."""
    with options.control_center() as client:
        page = client.audit_logs(
            user_id=user_id,
            action=action,
            resource=resource,
            since=since,
            until=until,
            limit=limit,
            offset=offset,
        )
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(audit_table(page.items, wide=wide))
    click.echo(page_note(page, "audit records"))


def audit_table(rows: list[AuditRecord], *, wide: bool = False) -> Table:
    table = plain_table("id", "time", "user", "action", "resource", "result", "ip", "status")
    styles = {"success": "green", "denied": "red", "failure": "yellow", "error": "red"}
    for r in rows:
        table.add_row(
            short_id(r.id, wide),
            when(r.timestamp),
            short_id(r.user_id, wide) if r.user_id else "-",
            r.action,
            r.resource,
            Text(r.result, styles.get(r.result, "")),
            r.ip or "-",
            str(r.details.get("status", "")),
        )
    return table
