"""`provisioning serve`: the orchestrator under uvicorn, with logging and a clean exit.

The port is bound before anything else, so a busy port fails at once. The app's
lifespan (which opens the store, takes the data-dir lock and starts the executor) runs
under uvicorn; when it fails for a known reason (`SchemaNotCurrent`, `AlreadyRunning`,
…) the CLI prints that reason as one line and exits 1. SIGINT and SIGTERM stop the
server gracefully, lifespan shutdown included, and then exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import click
import msgspec

from orchestrator.cli.common import Failure, Options, pass_options, shown_database
from orchestrator.data_dir import PRIVATE_UMASK
from orchestrator.running import CannotListen, configure_logging, listen, log_level
from orchestrator.settings import ConfigError, Settings

#: What each shipped provider type is, for the start-up banner.
PROVIDER_TYPE_DESCRIPTIONS = {"sim": "simulated cloud", "local": "commands on this host"}


@click.command()
@click.argument("app", required=False, type=click.Choice(["orchestrator", "control-center"]))
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (as the global --config, also accepted here).",
)
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
    options: Options,
    app: str | None,
    config: str | None,
    host: str | None,
    port: int | None,
    worker: bool | None,
) -> None:
    """Run the orchestrator and the control center until SIGINT or SIGTERM.

    APP picks one of them; without it both run, the control center in a child process
    (--host and --port then apply to the orchestrator).
    """
    if config is not None:
        options.config = config
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

        try:
            run_control_center(settings, host, port)
        except CannotListen as exc:
            raise Failure(str(exc)) from exc
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
    run_both(settings, options.config)


#: What moves each app's port, for the message when it is taken.
ORCHESTRATOR_PORT = "server.port (PROVISIONING_SERVER__PORT, or serve --port)"
CONTROL_CENTER_PORT = "control_center.port (PROVISIONING_CONTROL_CENTER__PORT)"


def _bind(host: str, port: int, setting: str) -> socket.socket:
    try:
        return listen(host, port, setting)
    except CannotListen as exc:
        raise Failure(str(exc)) from exc


def run_orchestrator(settings: Settings) -> None:
    """Serve the orchestrator API on `settings.server`; return once it has stopped."""
    level = _log_level(settings)
    listener = _bind(settings.server.host, settings.server.port, ORCHESTRATOR_PORT)
    try:
        _serve(settings, listener, level)
    finally:
        listener.close()
    click.echo("orchestrator stopped")


def run_both(settings: Settings, config: str | None) -> None:
    """Both apps, whole or not at all: both ports are bound here first (a taken port
    stops the start before anything runs, naming the setting that moves it); the
    control center runs in a child process on its inherited socket, which ends with
    this process (even on SIGKILL) and whose exit stops the orchestrator too."""
    level = _log_level(settings)
    listener = _bind(settings.server.host, settings.server.port, ORCHESTRATOR_PORT)
    try:
        cc = settings.control_center
        cc_listener = _bind(cc.host, cc.port, CONTROL_CENTER_PORT)
    except Failure:
        listener.close()
        raise
    command = [sys.executable, "-m", "control_center", "--fd", str(cc_listener.fileno())]
    if config:
        command += ["--config", config]
    signal.signal(signal.SIGTERM, _raise_stopped)
    control_center = subprocess.Popen(
        command, pass_fds=[cc_listener.fileno()], preexec_fn=_end_with_parent
    )
    cc_listener.close()
    watch = _ChildWatch(control_center)
    try:
        _serve(settings, listener, level)
    finally:
        listener.close()
        watch.stopping = True
        control_center.terminate()
        try:
            control_center.wait(15)
        except subprocess.TimeoutExpired:
            control_center.kill()
    if watch.ended:  # 0 is a clean stop: SIGINT to the terminal's group reaches both
        raise Failure(
            f"the control center stopped (exit status {watch.ended}; its message is above), "
            "so the orchestrator was stopped too"
        )
    click.echo("orchestrator stopped")


def _end_with_parent() -> None:  # pragma: no cover (runs in the child, before exec)
    """In the control center's process: SIGTERM when `serve` ends, SIGKILL included."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _ChildWatch:
    """Waits for the control center's process in a thread; when it ends while the
    orchestrator is not stopping, stops the orchestrator (SIGTERM to this process)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.stopping = False
        #: The child's exit status, when it ended on its own.
        self.ended: int | None = None
        threading.Thread(target=self._wait, name="control-center-watch", daemon=True).start()

    def _wait(self) -> None:
        status = self.process.wait()
        if not self.stopping:
            self.ended = status
            os.kill(os.getpid(), signal.SIGTERM)


def _log_level(settings: Settings) -> int:
    try:
        return log_level(settings)
    except ConfigError as exc:
        raise Failure(str(exc)) from exc


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
