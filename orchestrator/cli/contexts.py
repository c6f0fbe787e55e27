"""`provisioning context list|use|add|delete`: named installations, each an orchestrator
URL, a control-center URL and a saved session of its own.

Contexts are kept in `contexts.json` in the CLI's configuration directory
(`$XDG_CONFIG_HOME/provisioning`, else `~/.config/provisioning`; directory 0700, file
0600), with the one in use (`context use NAME`). A context's session is saved by
`login` in `contexts/NAME/credentials.json` (0600), beside the default one
(`credentials.json`, used when no context is). `--context NAME` (or
`$PROVISIONING_CONTEXT`) picks one for a single command; `--url`, `--cc-url` and
`--token` still win over what it holds.
"""

from __future__ import annotations

import re
import shutil

import click
from rich.table import Table

from orchestrator.cc_client import credentials_path, load_credentials
from orchestrator.cli.common import (
    Failure,
    Options,
    confirm,
    json_option,
    pass_options,
    print_json,
    stdout,
    yes_option,
)
from orchestrator.cli.context_store import Context, Contexts, load_contexts, save_contexts

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def _existing(found: Contexts, name: str) -> Context:
    if name not in found.contexts:
        known = ", ".join(sorted(found.contexts)) or "none yet"
        raise Failure(f"no context named {name!r} (known: {known})")
    return found.contexts[name]


@click.group()
def context() -> None:
    """Named installations (URLs and a session each): list, use, add, delete."""


@context.command("list")
@json_option
@pass_options
def list_contexts(options: Options) -> None:
    """The contexts; `*` marks the one in use."""
    found = load_contexts()
    rows = []
    for name, entry in sorted(found.contexts.items()):
        saved = load_credentials(credentials_path(name))
        user = saved.username if saved is not None else None
        rows.append(
            {
                "name": name,
                "current": name == found.current,
                "url": entry.url,
                "cc_url": entry.cc_url,
                "user": user,
            }
        )
    if options.json:
        print_json(rows)
        return
    if not rows:
        click.echo("no contexts; add one: provisioning context add NAME --url URL")
        return
    table = Table(box=None, header_style="bold")
    for column in ("", "name", "url", "control center", "logged in as"):
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(
            "*" if row["current"] else "",
            str(row["name"]),
            str(row["url"]),
            str(row["cc_url"] or "-"),
            str(row["user"] or "-"),
        )
    stdout.print(table)


@context.command("add")
@click.argument("name")
@click.option("--url", required=True, help="The orchestrator's base URL.")
@click.option("--cc-url", default="", help="The control center's base URL.")
@click.option("--use", "use_it", is_flag=True, help="Also use it from now on.")
def add_context(name: str, url: str, cc_url: str, use_it: bool) -> None:
    """Add context NAME: an orchestrator URL and a control center URL."""
    if not _NAME.match(name):
        raise click.BadParameter(
            "letters, digits, '.', '_' and '-', starting with a letter or digit", param_hint="NAME"
        )
    found = load_contexts()
    if name in found.contexts:
        raise Failure(f"context {name!r} exists; delete it first to change it")
    found.contexts[name] = Context(url=url.rstrip("/"), cc_url=cc_url.rstrip("/"))
    if use_it:
        found.current = name
    save_contexts(found)
    click.echo(f"added context {name}" + (" (in use)" if use_it else ""))


@context.command("use")
@click.argument("name")
def use_context(name: str) -> None:
    """Use context NAME from now on (its URLs and its session)."""
    found = load_contexts()
    _existing(found, name)
    found.current = name
    save_contexts(found)
    click.echo(f"using context {name}")


@context.command("delete")
@click.argument("name")
@yes_option
@pass_options
def delete_context(options: Options, name: str, yes: bool) -> None:
    """Delete context NAME and its saved session (log out first to end it on the server)."""
    found = load_contexts()
    _existing(found, name)
    confirm(yes, f"delete context {name} and its saved session?")
    del found.contexts[name]
    if found.current == name:
        found.current = ""
    save_contexts(found)
    shutil.rmtree(credentials_path(name).parent, ignore_errors=True)
    click.echo(f"deleted context {name}")
