"""The root command group, its global options, and how errors reach the user."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import click
import msgspec
from rich.console import Console

from orchestrator.cc_client import (
    ControlCenterClient,
    ControlCenterUnreachable,
    Credentials,
    CredentialsError,
    SessionExpired,
    fresh_credentials,
    load_credentials,
)
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
    #: `--cc-url`/`$PROVISIONING_CC_URL` of a control-center command.
    cc_url: str | None = None
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

    def saved_login(self) -> Credentials | None:
        """What `provisioning login` saved, as it is on disk (None without a login)."""
        if not self._login_read:
            self._login, self._login_read = load_credentials(), True
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
            self._login = saved = fresh_credentials()
        return saved.token if saved else None

    def base_url(self) -> str:
        """`--url`/`$PROVISIONING_URL`, else the saved login's, else the configured
        server's address."""
        if self.url:
            return self.url
        saved = self.saved_login()
        if saved is not None and saved.url:
            return saved.url
        server = self.settings().server
        return _address(server.host, server.port)

    def control_center_url(self) -> str:
        """`--cc-url`/`$PROVISIONING_CC_URL`, else the saved login's, else the configured
        control center's address."""
        if self.cc_url:
            return self.cc_url
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


class _Group(click.Group):
    """Turns the errors any command may meet into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise Failure(f"{exc.message} ({exc.code})") from exc
        except ControlCenterUnreachable as exc:
            raise Failure(
                f"cannot reach the control center at {exc.url}; is it running? "
                "(python -m control_center)"
            ) from exc
        except Unreachable as exc:
            raise Failure(
                f"cannot reach the orchestrator at {exc.url}; is it running? (provisioning serve)"
            ) from exc
        except (ConfigError, CredentialsError, SessionExpired) as exc:
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
from orchestrator.cli import accounts, batch, deployments, owner, profile, rollback  # noqa: E402, F401
