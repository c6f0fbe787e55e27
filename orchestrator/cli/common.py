"""What every command shares: the global options (`Options`), how an error reaches the
user (`Failure`), the `--json` and `--cc-url` options, and printing.

Command modules import this (and `cli/tables.py`), never `cli/app.py`, which imports
them to gather their commands under the root group.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar, cast

import click
import msgspec
import msgspec.yaml
from rich.console import Console

from orchestrator.cc_client import (
    ControlCenterClient,
    Credentials,
    credentials_path,
    fresh_credentials,
    load_credentials,
)
from orchestrator.cli.context_store import Context, active_context
from orchestrator.client import OrchestratorClient
from orchestrator.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

#: Tables, detail views and the live display. Piped output is not cut at 80 columns.
stdout = Console(highlight=False)
if not stdout.is_terminal and "COLUMNS" not in os.environ:
    stdout.width = 160


class Failure(click.ClickException):
    """An error for the user: `error: <message>` on stderr, then exit 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.message}", err=True)


@dataclass
class Options:
    """The global options, and what is derived from them on first use."""

    config: str | None
    url: str | None
    token: str | None
    json: bool
    #: `-o`: table, wide, json or yaml (`json` is True for the last two).
    output: str = "table"
    #: `--cc-url`/`$PROVISIONING_CC_URL` of a control-center command.
    cc_url: str | None = None
    #: `--context`/`$PROVISIONING_CONTEXT`; else the one `context use` chose.
    context: str | None = None
    _context: tuple[str, Context] | None = field(default=None, repr=False)
    _context_read: bool = field(default=False, repr=False)
    _settings: Settings | None = field(default=None, repr=False)
    _login: Credentials | None = field(default=None, repr=False)
    _login_read: bool = field(default=False, repr=False)

    def settings(self) -> Settings:
        """The configuration; raises `ConfigError` (shown as one line) when unusable."""
        if self._settings is None:
            # The CLI's own variables are not settings.
            environ = {k: v for k, v in os.environ.items() if k != "PROVISIONING_CC_URL"}
            self._settings = load_settings(self.config, environ)
        return self._settings

    def active_context(self) -> tuple[str, Context] | None:
        """The context in use (its name and URLs), or None."""
        if not self._context_read:
            self._context, self._context_read = active_context(self.context), True
        return self._context

    def credentials_path(self) -> Path:
        """Where the session is saved: the active context's, else the default one."""
        active = self.active_context()
        return credentials_path(active[0] if active else None)

    def saved_login(self) -> Credentials | None:
        """What `provisioning login` saved, as it is on disk (None without a login)."""
        if not self._login_read:
            self._login, self._login_read = load_credentials(self.credentials_path()), True
        return self._login

    def ignore_saved_login(self) -> None:
        """Act as if nothing were saved (for `login`, which replaces it)."""
        self._login, self._login_read = None, True

    def bearer(self, control_center: str | None = None) -> str | None:
        """`--token`/`$PROVISIONING_TOKEN`, else the saved login's access token, renewed
        once through the control center when it has expired. For a control center
        (`control_center`, its address), only the one that issued the login: a session
        is neither sent to nor renewed for another. (Orchestrators, which only check the
        token, get it at whatever address `--url` names.)"""
        if self.token:
            return self.token
        saved = self.saved_login()
        if saved is None or control_center not in (None, saved.cc_url):
            return None
        if saved.expired():
            self._login = saved = fresh_credentials(self.credentials_path())
        return saved.token if saved else None

    def base_url(self) -> str:
        """`--url`/`$PROVISIONING_URL`, else the active context's, else the saved
        login's, else the configured server's address."""
        if self.url:
            return self.url
        active = self.active_context()
        if active is not None and active[1].url:
            return active[1].url
        saved = self.saved_login()
        if saved is not None and saved.url:
            return saved.url
        server = self.settings().server
        return _address(server.host, server.port)

    def control_center_url(self) -> str:
        """`--cc-url`/`$PROVISIONING_CC_URL`, else the active context's, else the saved
        login's, else the configured control center's address."""
        if self.cc_url:
            return self.cc_url
        active = self.active_context()
        if active is not None and active[1].cc_url:
            return active[1].cc_url
        saved = self.saved_login()
        if saved is not None and saved.cc_url:
            return saved.cc_url
        center = self.settings().control_center
        return _address(center.host, center.port)

    def client(self) -> OrchestratorClient:
        return OrchestratorClient(self.base_url(), self.bearer())

    def control_center(self) -> ControlCenterClient:
        url = self.control_center_url()
        return ControlCenterClient(url, self.bearer(control_center=url))


def _address(host: str, port: int) -> str:
    # A server listening on every interface is reached on the loopback one.
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
    host = wildcard.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


pass_options = click.make_pass_decorator(Options)


#: `-o`'s formats: `table` (the default), `wide` (whole ids, every column), and the
#: machine-readable `json` and `yaml` (the API's `data`).
FORMATS = ("table", "wide", "json", "yaml")


def choose_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    """`-o FORMAT` (before or after the command name); `--json` is `-o json`."""
    options = ctx.find_object(Options)
    if value and options is not None:
        options.output = value
        options.json = value in ("json", "yaml")


def output_options(command: F) -> F:
    """`-o table|wide|json|yaml` and `--json` (= `-o json`), after a command's name as
    before it. A command with a `--wide` flag gets it set by `-o wide`."""

    def use_json(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value:
            choose_output(ctx, param, "json")

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        options = click.get_current_context().find_object(Options)
        if "wide" in kwargs and options is not None and options.output == "wide":
            kwargs["wide"] = True
        return command(*args, **kwargs)

    decorated: Any = run
    for decorate in (
        click.option(
            "--json", is_flag=True, expose_value=False, callback=use_json, help="= -o json."
        ),
        click.option(
            "-o",
            "--output",
            type=click.Choice(FORMATS),
            expose_value=False,
            callback=choose_output,
            help="Output format (default table).",
        ),
    ):
        decorated = decorate(decorated)
    return cast(F, decorated)


#: The name every command module knows it by.
json_option = output_options


def print_json(value: Any) -> None:
    """Structs, lists and dicts on stdout: indented JSON, or YAML with `-o yaml`."""
    ctx = click.get_current_context(silent=True)
    options = ctx.find_object(Options) if ctx is not None else None
    if options is not None and options.output == "yaml":
        click.echo(msgspec.yaml.encode(value).decode(), nl=False)
        return
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def progress_console(options: Options) -> tuple[Console, TextIO | None]:
    """Where following a workflow draws: stdout, or stderr when stdout is for data."""
    if options.json:
        return Console(stderr=True, highlight=False), sys.stderr
    return stdout, None


def shown_database(settings: Settings) -> str:
    """The database URL without its password."""
    from orchestrator.store.engine import shown_url

    return shown_url(settings.resolved_database_url)


def say(options: Options, value: Any, text: str) -> None:
    """`value` as JSON with `--json`, else the sentence `text`."""
    if options.json:
        print_json(value)
    else:
        click.echo(text)


def cc_url_option(command: F) -> F:
    """`--cc-url URL` (or `$PROVISIONING_CC_URL`): the control center to call."""

    def remember(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        options = ctx.find_object(Options)
        if value and options is not None:
            options.cc_url = value

    decorate = click.option(
        "--cc-url",
        envvar="PROVISIONING_CC_URL",
        expose_value=False,
        callback=remember,
        metavar="URL",
        help="Control center base URL [env: PROVISIONING_CC_URL].",
    )
    return decorate(command)


def read_secret_line(what: str) -> str:
    """One line of stdin, without its line break (for `--password-stdin`)."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise click.UsageError(f"--password-stdin: no {what} on stdin")
    return line


def yes_option(command: F) -> F:
    """`--yes`/`-y`: do a destructive command without asking (see `confirm`)."""
    return click.option("--yes", "-y", is_flag=True, help="Do it without asking.")(command)


def confirm(yes: bool, question: str) -> None:
    """Ask `question` on the terminal unless `yes`; without a terminal on stdin, refuse
    (exit 1) and say to pass --yes. A "no" exits 1 with nothing done."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise Failure(
            f"{question.rstrip('?')}: refused, as there is no terminal to confirm on; "
            "pass --yes to do it"
        )
    if not click.confirm(question, default=False, err=True):
        raise Failure("not confirmed; nothing was done")
