"""`provisioning api-keys`: your API keys on the control center: create (the key is shown
once), list, revoke."""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from orchestrator.cc_client import ApiKey
from orchestrator.cli.common import (
    Options,
    cc_url_option,
    json_option,
    pass_options,
    print_json,
    say,
    stdout,
)
from orchestrator.cli.tables import iso, page_note, plain_table, when


@click.group("api-keys")
def api_keys() -> None:
    """Your API keys: create (the key is shown once), list, revoke."""


@api_keys.command("create")
@click.argument("name")
@click.option("--expires-in-days", type=click.IntRange(1, 3650), help="Expire after N days.")
@click.option("-d", "--description", default="", help="What the key is for.")
@cc_url_option
@json_option
@pass_options
def create_api_key(
    options: Options, name: str, expires_in_days: int | None, description: str
) -> None:
    """Create an API key named NAME and print it (the only time it is shown)."""
    with options.control_center() as client:
        created = client.create_api_key(
            name, description=description, expires_in_days=expires_in_days
        )
    if options.json:
        print_json(created)
    else:
        click.echo(created.key)
        expires = iso(created.expires_at) if created.expires_at else "never"
        click.echo(f"api key {created.name} ({created.id}), expires {expires}", err=True)
    click.echo(
        "warning: this is the only time the key is shown; store it now (it cannot be "
        "retrieved again, only revoked)",
        err=True,
    )


@api_keys.command("list")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@click.option("--user-id", help="Another user's keys (administrators).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_api_keys(
    options: Options, include_revoked: bool, user_id: str | None, limit: int, offset: int
) -> None:
    """List your API keys (their prefixes; never the keys)."""
    with options.control_center() as client:
        page = client.list_api_keys(
            user_id=user_id, include_revoked=include_revoked, limit=limit, offset=offset
        )
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(api_key_table(page.items))
    click.echo(page_note(page, "API keys"))


@api_keys.command("revoke")
@click.argument("key_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def revoke_api_key(options: Options, key_id: str) -> None:
    """Revoke API key ID: it stops working at once."""
    with options.control_center() as client:
        message = client.revoke_api_key(key_id)
    say(options, {"id": key_id, "message": message}, message)


def api_key_table(rows: list[ApiKey]) -> Table:
    table = plain_table("id", "name", "prefix", "created", "expires", "last used", "revoked")
    for k in rows:
        table.add_row(
            k.id,
            k.name,
            k.key_prefix,
            when(k.created_at),
            when(k.expires_at) if k.expires_at else "never",
            when(k.last_used),
            Text(when(k.revoked_at), "red") if k.revoked_at else "-",
        )
    return table
