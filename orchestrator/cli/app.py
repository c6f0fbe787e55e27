"""The root command group, its global options, and how errors reach the user."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import click
import msgspec
from rich.console import Console

from orchestrator.client import ApiError, OrchestratorClient, Unreachable
from orchestrator.settings import ConfigError, Settings, load_settings

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
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        """The configuration; raises `ConfigError` (shown as one line) when unusable."""
        if self._settings is None:
            self._settings = load_settings(self.config)
        return self._settings

    def base_url(self) -> str:
        """`--url`/`$PROVISIONING_URL`, else the configured server's address."""
        if self.url:
            return self.url
        server = self.settings().server
        # A server listening on every interface is reached on the loopback one.
        wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104
        host = wildcard.get(server.host, server.host)
        return f"http://[{host}]:{server.port}" if ":" in host else f"http://{host}:{server.port}"

    def client(self) -> OrchestratorClient:
        return OrchestratorClient(self.base_url(), self.token)


class _Group(click.Group):
    """Turns the errors any command may meet into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise Failure(f"{exc.message} ({exc.code})") from exc
        except Unreachable as exc:
            raise Failure(
                f"cannot reach the orchestrator at {exc.url}; is it running? (provisioning serve)"
            ) from exc
        except ConfigError as exc:
            raise Failure(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option(
    "--url", envvar="PROVISIONING_URL", help="Orchestrator base URL [env: PROVISIONING_URL]."
)
@click.option(
    "--token", envvar="PROVISIONING_TOKEN", help="API bearer token [env: PROVISIONING_TOKEN]."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.version_option(package_name="provisioning")
@click.pass_context
def cli(
    ctx: click.Context, config: str | None, url: str | None, token: str | None, as_json: bool
) -> None:
    """provisioning: a workflow orchestrator for infrastructure."""
    ctx.obj = Options(config=config, url=url, token=token, json=as_json)


pass_options = click.make_pass_decorator(Options)


def json_option(command: F) -> F:
    """`--json` after a list or show command, the same as before the command name."""

    def enable(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        options = ctx.find_object(Options)
        if value and options is not None:
            options.json = True

    decorate = click.option(
        "--json", is_flag=True, expose_value=False, callback=enable, help="Print JSON."
    )
    return decorate(command)


def print_json(value: Any) -> None:
    """Structs, lists and dicts as indented JSON on stdout."""
    click.echo(msgspec.json.format(msgspec.json.encode(value), indent=2).decode())


def shown_database(settings: Settings) -> str:
    """The database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(settings.resolved_database_url).render_as_string(hide_password=True)


# Groups defined in modules of their own, registered on `cli` as they are imported (last,
# as they import this module).
from orchestrator.cli import batch, rollback  # noqa: E402, F401
