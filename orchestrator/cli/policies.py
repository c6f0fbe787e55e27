"""`provisioning policies`: list, show, create, update and delete access policies through
the control center's API; `restore-defaults` works on the database itself
(`cli/owner.py`)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import msgspec
from rich.table import Table
from rich.text import Text

from orchestrator.cc_client import Policy
from orchestrator.cli.common import (
    Failure,
    Options,
    cc_url_option,
    confirm,
    json_option,
    pass_options,
    print_json,
    say,
    stdout,
    yes_option,
)
from orchestrator.cli.owner import restore_defaults
from orchestrator.cli.tables import iso, page_note, plain_table, yes_no
from orchestrator.client import ApiError


@click.group()
def policies() -> None:
    """Access policies: list, show, create, update, delete."""


policies.add_command(restore_defaults)  # on the database itself, not through the API


@policies.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@cc_url_option
@json_option
@pass_options
def list_policies(options: Options, limit: int, offset: int) -> None:
    """List policies."""
    with options.control_center() as client:
        page = client.list_policies(limit=limit, offset=offset)
    if options.json:
        print_json(page.items)
        return
    if page.items:
        stdout.print(policy_table(page.items))
    click.echo(page_note(page, "policies"))


@policies.command("show")
@click.argument("policy_id", metavar="ID")
@cc_url_option
@json_option
@pass_options
def show_policy(options: Options, policy_id: str) -> None:
    """Show policy ID with its rules."""
    with options.control_center() as client:
        found = client.get_policy(policy_id)
    if options.json:
        print_json(found)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in msgspec.structs.asdict(found).items():
        if name != "rules":
            grid.add_row(name, iso(value) if isinstance(value, datetime) else str(value))
    grid.add_row("rules", str(len(found.rules)))
    stdout.print(grid)
    if found.rules:
        stdout.print(rule_table(found.rules))


@policies.command("create")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@cc_url_option
@json_option
@pass_options
def create_policy(options: Options, file: str) -> None:
    """Create the policy in FILE (JSON or YAML: name, version, description, rules, enabled)."""
    document = _read_policy(file)
    with options.control_center() as client, _about(file):
        created = client.create_policy(document)
    if options.json:
        print_json(created)
    else:
        click.echo(f"created policy {created.name} {created.version}: {created.id}")


@policies.command("update")
@click.argument("policy_id", metavar="ID")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True))
@cc_url_option
@json_option
@pass_options
def update_policy(options: Options, policy_id: str, file: str) -> None:
    """Change policy ID to the fields FILE gives (JSON or YAML; others stay)."""
    document = _read_policy(file)
    with options.control_center() as client, _about(file):
        message = client.update_policy(policy_id, document)
    say(options, {"id": policy_id, "changed": sorted(document), "message": message}, message)


@policies.command("delete")
@click.argument("policy_id", metavar="ID")
@cc_url_option
@yes_option
@json_option
@pass_options
def delete_policy(options: Options, policy_id: str, yes: bool) -> None:
    """Delete policy ID."""
    confirm(yes, f"delete policy {policy_id}?")
    with options.control_center() as client:
        message = client.delete_policy(policy_id)
    say(options, {"id": policy_id, "message": message}, message)


def _read_policy(file: str) -> dict[str, Any]:
    """A policy document: JSON when FILE ends in .json, else YAML (JSON is YAML too)."""
    source = "stdin" if file == "-" else file
    try:
        text = sys.stdin.read() if file == "-" else Path(file).read_text()
    except OSError as exc:
        raise Failure(f"{source}: {exc.strerror}") from exc
    import yaml  # only this command reads YAML: imported here, not by every command

    try:
        document = json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if file.endswith(".json") else "YAML"
        raise Failure(f"{source}: not valid {kind}: {exc}") from exc
    if not isinstance(document, dict):
        raise Failure(f"{source}: a policy is a mapping (name, version, rules, enabled)")
    return document


@contextlib.contextmanager
def _about(file: str) -> Iterator[None]:
    """Name FILE in the error the control center gives for its content."""
    try:
        yield
    except ApiError as exc:
        if exc.status in (400, 422):
            source = "stdin" if file == "-" else file
            raise Failure(f"{source}: {exc.message} ({exc.code})") from exc
        raise


def policy_table(rows: list[Policy]) -> Table:
    table = plain_table("id", "name", "version", "enabled", "rules", "description")
    for p in rows:
        table.add_row(p.id, p.name, p.version, yes_no(p.enabled), str(len(p.rules)), p.description)
    return table


def rule_table(rules: list[dict[str, Any]]) -> Table:
    table = plain_table("rule", "effect", "resource", "action", "condition")
    for number, rule in enumerate(rules):
        effect = str(rule.get("effect", ""))
        table.add_row(
            str(number),
            Text(effect, "red" if effect == "Deny" else "green"),
            _listed(rule.get("resource")),
            _listed(rule.get("action")),
            str(rule.get("condition") or "-"),
        )
    return table


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "-" if value is None else str(value)
