"""Running the control center under uvicorn on `settings.control_center`.

`python -m control_center` uses this; `provisioning serve control-center` can too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

import structlog

from control_center.bootstrap import ADMIN_PASSWORD_VARIABLE
from orchestrator.settings import Settings, load_settings


def settings_from_environment(
    config_file: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """`load_settings`, minus the variables that are not settings (the admin password)."""
    environ = os.environ if environ is None else environ
    kept = {k: v for k, v in environ.items() if k != ADMIN_PASSWORD_VARIABLE}
    return load_settings(config_file, kept)


def _configure_logging(settings: Settings) -> int:
    level = logging.getLevelName(settings.server.log_level.upper())
    level = level if isinstance(level, int) else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.getLogger("alembic").setLevel(max(level, logging.WARNING))
    # At DEBUG both would log SQL parameters: password hashes, token digests.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
    logging.getLogger("sqlalchemy").setLevel(max(level, logging.WARNING))
    return level


def run_control_center(
    settings: Settings, host: str | None = None, port: int | None = None
) -> None:
    """Serve until SIGINT or SIGTERM; uvicorn shuts the app down gracefully."""
    import uvicorn

    from control_center.app import create_app

    level = _configure_logging(settings)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host or settings.control_center.host,
        port=settings.control_center.port if port is None else port,
        log_config=None,
        log_level=level,
        access_log=level <= logging.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **settings.proxy_options(),
    )
    uvicorn.Server(config).run()
