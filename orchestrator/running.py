"""What the processes of both apps share when they run (`provisioning serve`, `worker`,
`python -m control_center`): the log format and the listening socket.

One log format for both apps: structlog's and the standard library's records (uvicorn's,
Litestar's) go through one handler on stderr, as JSON lines when stderr is not a
terminal (or `server.log_format = "json"`), as readable console lines on a terminal (or
`"console"`).
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

from orchestrator.settings import ConfigError, Settings


class CannotListen(Exception):
    """The address could not be bound; the message names the setting that moves it."""


def listen(host: str, port: int, setting: str) -> socket.socket:
    """A listening TCP socket on `host:port`, bound before anything slow happens, so a
    busy port fails at once. `setting` names what moves it, for the message."""
    if not 0 <= port <= 65535:  # getaddrinfo would quietly wrap it around
        raise CannotListen(f"{setting}: {port} is not a port number (0-65535)")
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(address[:2], family=family)
    except OSError as exc:
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise CannotListen(
            f"cannot listen on {host}:{port}: {why or exc}; choose another port with {setting}"
        ) from exc
    return listener


def log_level(settings: Settings) -> int:
    """`server.log_level` as a logging level (`load_settings` checked both it and
    `server.log_format`; settings made otherwise may hold anything)."""
    level = logging.getLevelName(settings.server.log_level.upper())
    if not isinstance(level, int):
        raise ConfigError(f"server.log_level: unknown level '{settings.server.log_level}'")
    return level


def configure_logging(settings: Settings, level: int) -> None:
    """structlog's and the standard library's records through one handler on stderr:
    console lines on a terminal (or `log_format = "console"`), JSON lines otherwise.

    Call it after the Litestar app is created: Litestar configures logging on creation."""
    import structlog

    json_lines = settings.server.log_format == "json" or (
        settings.server.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_lines
        # Plain tracebacks: the default (rich's) costs a third of a second of imports.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
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
