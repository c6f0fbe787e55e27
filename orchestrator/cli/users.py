"""`provisioning users`: list, create, update and delete the users of the control center
(and of the orchestrator), through its API at `--cc-url`/`$PROVISIONING_CC_URL`, else the
saved login's, else the configured `control_center.host:port`."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from orchestrator.cc_client import User
from orchestrator.cli.common import (
    Options,
    cc_url_option,
    confirm,
    json_option,
    pass_options,
    print_json,
    read_secret_line,
    say,
    stdout,
    yes_option,
)
from orchestrator.cli.tables import page_note, plain_table, when, yes_no


@click.group()
def users() -> None:
    """Users of the control center (and of the orchestrator): list, create, update, delete."""


@users.command("list")
@click.option("--role", help="Only users with this role.")
@click.option(
    "--enabled/--disabled", "enabled", default=None, help="Only enabled (disabled) users."
)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_users(
    options: Options, role: str | None, enabled: bool | None, limit: int, offset: int
) -> None:
    """List users."""
    with options.control_center() as client:
        page = client.list_users(role=role, enabled=enabled, limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(user_table(page.items))
    click.echo(page_note(page, "users"))


@users.command("create")
@click.argument("username")
@click.option("--email", required=True, help="The user's email address (unique).")
@click.option("--role", "roles", multiple=True, help="A role (repeat for more); default: viewer.")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin (one line).")
@click.option(
    "--must-change-password", is_flag=True, help="Make the user change it at first login."
)
@cc_url_option
@json_option
@pass_options
def create_user(
    options: Options,
    username: str,
    email: str,
    roles: tuple[str, ...],
    password_stdin: bool,
    must_change_password: bool,
) -> None:
    """Create user USERNAME; the password is asked twice (hidden) unless --password-stdin."""
    password = (
        read_secret_line("password")
        if password_stdin
        else click.prompt(
            f"Password for {username}", hide_input=True, confirmation_prompt=True, err=True
        )
    )
    with options.control_center() as client:
        created = client.create_user(
            username,
            email,
            password,
            roles=list(roles) or None,
            must_change_password=must_change_password,
        )
    if options.json:
        print_json(created)
    else:
        click.echo(f"created user {created.username} ({', '.join(created.roles)}): {created.id}")


@users.command("update")
@click.argument("user_id", metavar="ID")
@click.option("--email", help="A new email address.")
@click.option("--role", "roles", multiple=True, help="Replace the roles (repeat for more).")
@click.option("--enable/--disable", "enabled", default=None, help="Enable or disable the user.")
@cc_url_option
@json_option
@pass_options
def update_user(
    options: Options,
    user_id: str,
    email: str | None,
    roles: tuple[str, ...],
    enabled: bool | None,
) -> None:
    """Change user ID's email, roles or whether it is enabled."""
    fields: dict[str, Any] = {}
    if email is not None:
        fields["email"] = email
    if roles:
        fields["roles"] = list(roles)
    if enabled is not None:
        fields["enabled"] = enabled
    if not fields:
        raise click.UsageError("nothing to change: give --email, --role, --enable or --disable")
    with options.control_center() as client:
        message = client.update_user(user_id, fields)
    say(options, {"id": user_id, "changed": sorted(fields), "message": message}, message)


@users.command("delete")
@click.argument("user_id", metavar="ID")
@cc_url_option
@yes_option
@json_option
@pass_options
def delete_user(options: Options, user_id: str, yes: bool) -> None:
    """Delete user ID."""
    confirm(yes, f"delete user {user_id}?")
    with options.control_center() as client:
        message = client.delete_user(user_id)
    say(options, {"id": user_id, "message": message}, message)


def user_table(rows: list[User]) -> Table:
    table = plain_table("id", "username", "email", "roles", "enabled", "mfa", "last login")
    for u in rows:
        table.add_row(
            u.id,
            u.username,
            u.email,
            ", ".join(u.roles),
            yes_no(u.enabled),
            yes_no(u.mfa_enabled),
            when(u.last_login),
        )
    return table
