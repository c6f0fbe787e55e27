"""`provisioning serve`: the orchestrator under uvicorn, with logging and a clean exit.

The port is bound before anything else, so a busy port fails at once. The app's
lifespan (which opens the store, takes the data-dir lock and starts the executor) runs
under uvicorn; when it fails for a known reason (`SchemaNotCurrent`, `AlreadyRunning`,
…) the CLI prints that reason as one line and exits 1. SIGINT and SIGTERM stop the
server gracefully, lifespan shutdown included, and then exit 0.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import click
import msgspec

from orchestrator.cli.common import Failure, Options, pass_options, shown_database
from orchestrator.data_dir import PRIVATE_UMASK
from orchestrator.settings import ConfigError, Settings

#: What each shipped provider type is, for the start-up banner.
PROVIDER_TYPE_DESCRIPTIONS = {"sim": "simulated cloud", "local": "commands on this host"}


@click.command()
@click.argument("app", required=False, type=click.Choice(["orchestrator", "control-center"]))
@click.option("--host", help="Listen address (default: server.host / control_center.host).")
@click.option("--port", type=click.IntRange(0, 65535), help="Listen port of the app served.")
@click.option(
    "--worker/--no-worker",
    default=None,
    help="On PostgreSQL: also run tasks here (default: server.worker, true), or serve the "
    "API only and leave the tasks to `provisioning worker` processes.",
)
@pass_options
def serve(
    options: Options, app: str | None, host: str | None, port: int | None, worker: bool | None
) -> None:
    """Run the orchestrator and the control center until SIGINT or SIGTERM.

    APP picks one of them; without it both run, the control center in a child process
    (--host and --port then apply to the orchestrator).
    """
    settings = options.settings()
    os.umask(PRIVATE_UMASK)  # the database, keys and logs it writes are its own
    if worker is not None:
        if not worker and settings.is_sqlite:
            raise Failure(
                "--no-worker needs PostgreSQL: the embedded SQLite database is run by the "
                "serve process's own executor (set database_url to use separate workers)"
            )
        settings = msgspec.structs.replace(
            settings, server=msgspec.structs.replace(settings.server, worker=worker)
        )
    if app == "control-center":
        from control_center.serve import run_control_center

        run_control_center(settings, host, port)
        return
    server = msgspec.structs.replace(
        settings.server,
        host=settings.server.host if host is None else host,
        port=settings.server.port if port is None else port,
    )
    settings = msgspec.structs.replace(settings, server=server)
    if app == "orchestrator":
        run_orchestrator(settings)
        return
    command = [sys.executable, "-m", "orchestrator.cli", "serve", "control-center"]
    if options.config:
        command[3:3] = ["--config", options.config]
    control_center = subprocess.Popen(command)
    try:
        run_orchestrator(settings)
    finally:
        control_center.terminate()
        try:
            control_center.wait(15)
        except subprocess.TimeoutExpired:
            control_center.kill()


def run_orchestrator(settings: Settings) -> None:
    """Serve the orchestrator API on `settings.server`; return once it has stopped."""
    level = log_level(settings)
    listener = _listen(settings.server.host, settings.server.port)  # fail fast, before imports
    try:
        _serve(settings, listener, level)
    finally:
        listener.close()
    click.echo("orchestrator stopped")


def _serve(settings: Settings, listener: socket.socket, level: int) -> None:
    import uvicorn

    from orchestrator.api.app import create_app
    from orchestrator.service import AlreadyRunning, Orchestrator
    from orchestrator.store.engine import SchemaNotCurrent
    from providers.base import ProviderConfigError

    try:
        orchestrator = Orchestrator(settings)
    except ProviderConfigError as exc:
        raise Failure(str(exc)) from exc
    port = listener.getsockname()[1]
    app = _Lifespan(
        create_app(orchestrator),
        expected=(AlreadyRunning, SchemaNotCurrent, ConfigError, ProviderConfigError),
        on_started=lambda: _started(settings, orchestrator.instance_types, port),
    )
    configure_logging(settings, level)  # after create_app: Litestar configures on creation
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=level,
        access_log=level <= logging.DEBUG,
        lifespan="on",
        # uvloop: its callbacks, timers and fd watches cost less CPU per task than the
        # standard loop's (tests/perf/bench_executor.py, which runs on it too).
        loop="uvloop",
        timeout_graceful_shutdown=10,
        **settings.proxy_options(),
    )
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        uvicorn.Server(config).run(sockets=[listener])
    except SystemExit as exc:  # uvicorn's answer to a failed lifespan start-up
        if app.error is None:
            raise
        raise Failure(f"the orchestrator did not start: {app.describe_error()}") from exc
    except (_Stopped, KeyboardInterrupt):
        pass  # uvicorn re-raises the signal once its graceful shutdown is done


class _Stopped(Exception):
    """SIGTERM arrived."""


def _raise_stopped(_signum: int, _frame: FrameType | None) -> None:
    raise _Stopped


class _Lifespan:
    """The ASGI app, watching its lifespan: `on_started` runs once start-up completed;
    when start-up fails, the reason is kept in `error`.

    An expected failure is reported by the CLI as one line, so its traceback is kept out
    of the log; any other failure keeps its traceback.
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        expected: tuple[type[Exception], ...],
        on_started: Callable[[], None],
    ) -> None:
        self.app = app
        self.expected = expected
        self.on_started = on_started
        self.error: BaseException | None = None
        logging.getLogger("uvicorn.error").addFilter(self._drop_failure_notice)

    def describe_error(self) -> str:
        if self.known_error is not None:
            return str(self.known_error)
        return f"{type(self.error).__name__}: {self.error} (see the log above)"

    @property
    def known_error(self) -> Exception | None:
        """The expected exception behind the failure, also inside an exception group."""
        found: BaseException | None = self.error
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0] if len(found.exceptions) == 1 else None
        return found if isinstance(found, self.expected) else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def watching_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.on_started()
            elif message["type"] == "lifespan.startup.failed":
                self.error = sys.exc_info()[1]  # the app sends this while handling it
                if self.known_error is not None:
                    message = {"type": message["type"], "message": ""}
            await send(message)

        await self.app(scope, receive, watching_send)

    def _drop_failure_notice(self, record: logging.LogRecord) -> bool:
        return not (self.known_error is not None and "startup failed" in record.getMessage())


def _listen(host: str, port: int) -> socket.socket:
    if not 0 <= port <= 65535:  # getaddrinfo would quietly wrap it around
        raise Failure(f"server.port: {port} is not a port number (0-65535)")
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(address[:2], family=family)
    except OSError as exc:
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise Failure(f"cannot listen on {host}:{port}: {why or exc}") from exc
    return listener


def _started(settings: Settings, instance_types: dict[str, str], port: int) -> None:
    from orchestrator.service import freeze_startup_heap

    freeze_startup_heap()
    _print_banner(settings, instance_types, port)


def _print_banner(settings: Settings, instance_types: dict[str, str], port: int) -> None:
    host = settings.server.host
    shown_host = f"[{host}]" if ":" in host else host
    providers = ", ".join(
        f"{name} ({kind}, {PROVIDER_TYPE_DESCRIPTIONS[kind]})"
        if kind in PROVIDER_TYPE_DESCRIPTIONS
        else f"{name} ({kind})"
        for name, kind in instance_types.items()
    )
    click.echo("provisioning orchestrator")
    for key, value in (
        ("listening", f"http://{shown_host}:{port}"),
        ("data dir", str(settings.data_dir)),
        ("database", shown_database(settings)),
        ("executor", _executor_line(settings)),
        ("workspace", str(settings.workspace)),
        ("providers", providers or "none"),
    ):
        click.echo(f"  {key:<10} {value}")
    if "sim" in instance_types.values():
        click.echo("  note       sim instances are simulated clouds: nothing real is created")


def _executor_line(settings: Settings) -> str:
    if settings.is_sqlite:
        return "in this process (embedded database)"
    if settings.server.worker:
        return "a worker in this process, beside any `provisioning worker`"
    return "none here: `provisioning worker` processes run the tasks"


def log_level(settings: Settings) -> int:
    level = logging.getLevelName(settings.server.log_level.upper())
    if not isinstance(level, int):
        raise Failure(f"server.log_level: unknown level '{settings.server.log_level}'")
    if settings.server.log_format not in ("auto", "console", "json"):
        raise Failure(
            f"server.log_format must be auto, console or json, not '{settings.server.log_format}'"
        )
    return level


def configure_logging(settings: Settings, level: int) -> None:
    """structlog's and the standard library's records through one handler on stderr:
    console lines on a terminal (or `log_format = "console"`), JSON lines otherwise."""
    import structlog

    json_lines = settings.server.log_format == "json" or (
        settings.server.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_lines:  # the console renderer formats tracebacks itself
        shared.append(structlog.processors.format_exc_info)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    litestar = logging.getLogger("litestar")  # Litestar's default config gives it its own
    litestar.handlers, litestar.propagate = [], True
    # Database drivers log statement parameters at DEBUG, which can hold password hashes.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
    logging.getLogger("sqlalchemy").setLevel(max(level, logging.WARNING))
    # Alembic narrates every start ("Context impl SQLiteImpl."); keep that for debugging.
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
