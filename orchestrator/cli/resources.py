"""What providers declare, done from the command line, and the inventory they keep.

- `providers`: the configured instances, their kinds and operations (`GET /providers`).
- `apply INSTANCE KIND OPERATION -p key=value …`: one operation. A mutating one is a
  workflow: its id on stdout (`{"workflow_id": …}` with `--json`), or with `--wait`
  followed as `workflow wait` follows it; a read-only one prints its result.
- `resources list|show`: the inventory (`GET /resources`).
"""

from __future__ import annotations

from typing import Any

import click
import msgspec
from rich.table import Table
from rich.text import Text

from orchestrator.cli.common import Options, json_option, pass_options, print_json, stdout
from orchestrator.cli.tables import detail, page_note, short_id, status_text, when
from orchestrator.cli.workflows import submitted
from orchestrator.client import Resource


@click.command("providers")
@json_option
@pass_options
def list_providers(options: Options) -> None:
    """List provider instances with the kinds and operations they declare."""
    with options.client() as client:
        instances = client.list_providers()
    if options.json:
        print_json(instances)
        return
    table = Table(box=None, header_style="bold")
    for column in ("instance", "type", "kind", "operations"):
        table.add_column(column, no_wrap=column != "operations")
    for instance in instances:
        kinds = instance.kinds or []
        if not kinds:
            table.add_row(instance.name, instance.type, "-", Text("free-form", "dim"))
        for kind in kinds:
            operations = ", ".join(
                op.name + ("" if op.mutates else " (reads)") for op in kind.operations
            )
            table.add_row(instance.name, instance.type, kind.name, operations)
    stdout.print(table)


def _param(raw: str) -> tuple[str, Any]:
    """`key=value` (a string) or `key:=json` (any JSON value)."""
    key, equals, value = raw.partition("=")
    as_json = key.endswith(":")
    key = key.removesuffix(":")
    if not equals or not key:
        raise click.BadParameter(f"{raw!r}: give key=value, or key:=json")
    if not as_json:
        return key, value
    try:
        return key, msgspec.json.decode(value)
    except msgspec.DecodeError as exc:
        raise click.BadParameter(f"{raw!r}: not JSON after ':=' ({exc})") from None


@click.command("apply")
@click.argument("instance")
@click.argument("kind")
@click.argument("operation")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter: key=value (a string) or key:=json (a number, list, object…).",
)
@click.option("--check", is_flag=True, help="Check mode: plan, change nothing.")
@click.option("--wait", is_flag=True, help="Follow the workflow until it ends.")
@json_option
@pass_options
def apply(
    options: Options,
    instance: str,
    kind: str,
    operation: str,
    params: tuple[str, ...],
    check: bool,
    wait: bool,
) -> None:
    """Do OPERATION on a KIND of resource of provider INSTANCE (see `providers`)."""
    values = dict(_param(raw) for raw in params)
    with options.client() as client:
        applied = client.apply(instance, kind, operation, values, check_mode=check)
        if applied.workflow_id is not None:
            if options.json and not wait and not check:
                print_json({"workflow_id": applied.workflow_id})
                return
            submitted(options, client, applied.workflow_id, wait, check=check)
            return
    result = applied.result or {}
    if options.json:
        print_json(result)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in result.items():
        shown = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        grid.add_row(key, shown)
    stdout.print(grid)


@click.group()
def resources() -> None:
    """The inventory: what providers created or changed."""


@resources.command("list")
@click.option("--kind", help="Only this kind (server, file, …).")
@click.option("--provider", metavar="INSTANCE", help="Only this provider instance's.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--wide", is_flag=True, help="Show whole ids.")
@json_option
@pass_options
def list_resources(
    options: Options,
    kind: str | None,
    provider: str | None,
    limit: int,
    offset: int,
    wide: bool,
) -> None:
    """List the inventory, by provider instance, kind and name."""
    with options.client() as client:
        page = client.list_resources(kind=kind, provider=provider, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(_table(page.items, wide=wide))
    click.echo(page_note(page, "resources"))


@resources.command("show")
@click.argument("resource_id", metavar="ID")
@json_option
@pass_options
def show_resource(options: Options, resource_id: str) -> None:
    """Show every field of an inventory row."""
    with options.client() as client:
        found = client.get_resource(resource_id)
    if options.json:
        print_json(found)
        return
    stdout.print(detail(found))


def _table(rows: list[Resource], *, wide: bool) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("id", "provider", "kind", "name", "status", "updated"):
        table.add_column(column, no_wrap=column != "name")
    for row in rows:
        table.add_row(
            short_id(row.id, wide),
            row.provider,
            row.kind,
            row.name,
            status_text(row.status),
            when(row.updated_at),
        )
    return table
