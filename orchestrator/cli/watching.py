"""`--watch` on lists: the list drawn again as it changes, until Ctrl-C (exit 130) or,
when the list is one workflow's, until that workflow ends (exit 0).

The list is read again every `INTERVAL` seconds. On a terminal the table is redrawn in
place; elsewhere (pipes, CI logs) it is printed again, after a blank line, each time it
changed; with `-o json|yaml`, each changed list is printed as a document of its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click
import msgspec
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from orchestrator.cli.common import Options, print_json, stdout

#: Seconds between two reads of the list.
INTERVAL = 1.0


@dataclass
class Snapshot:
    """One read of the list: its rows (as `-o json` prints them), how a table shows
    them, and whether watching ends after it."""

    data: Any
    view: RenderableType
    ended: bool = False


def watch_list(options: Options, read: Callable[[], Snapshot], what: str) -> None:
    """Show `read()` again as it changes (see the module); `what` names the list."""
    try:
        if stdout.is_terminal and not options.json:
            _live(read)
        else:
            _lines(options, read)
    except KeyboardInterrupt:
        click.echo(f"\nstopped watching {what}", err=True)
        sys.exit(130)


def _live(read: Callable[[], Snapshot]) -> None:
    with Live(console=stdout, auto_refresh=False) as live:
        while True:
            snapshot = read()
            stamp = Text(f"every {INTERVAL:g}s; Ctrl-C stops watching", "dim")
            live.update(Group(snapshot.view, stamp), refresh=True)
            if snapshot.ended:
                return
            time.sleep(INTERVAL)


def _lines(options: Options, read: Callable[[], Snapshot]) -> None:
    shown: bytes | None = None
    while True:
        snapshot = read()
        encoded = msgspec.json.encode(snapshot.data)
        if encoded != shown:
            if options.json:
                print_json(snapshot.data)
            else:
                if shown is not None:
                    click.echo()
                stdout.print(snapshot.view)
            sys.stdout.flush()
            shown = encoded
        if snapshot.ended:
            return
        time.sleep(INTERVAL)
