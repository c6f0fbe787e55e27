"""Running the control center under uvicorn on `settings.control_center`.

`python -m control_center` uses this; `provisioning serve control-center` can too.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from control_center.bootstrap import ADMIN_PASSWORD_VARIABLE
from orchestrator.running import configure_logging, listen, log_level
from orchestrator.settings import Settings, load_settings


def settings_from_environment(
    config_file: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """`load_settings`, minus the variables that are not settings (the admin password)."""
    environ = os.environ if environ is None else environ
    kept = {k: v for k, v in environ.items() if k != ADMIN_PASSWORD_VARIABLE}
    return load_settings(config_file, kept)


def run_control_center(
    settings: Settings, host: str | None = None, port: int | None = None, fd: int | None = None
) -> None:
    """Serve until SIGINT or SIGTERM; uvicorn shuts the app down gracefully.

    The port is bound first (`CannotListen` names the setting that moves it), unless
    `fd` is a listening socket inherited from `provisioning serve`, which bound it."""
    level = log_level(settings)
    if fd is not None:
        listener = socket.socket(fileno=fd)
    else:
        listener = listen(
            host or settings.control_center.host,
            settings.control_center.port if port is None else port,
            "control_center.port (PROVISIONING_CONTROL_CENTER__PORT)",
        )
    try:
        _serve(settings, listener, level)
    finally:
        listener.close()


def _serve(settings: Settings, listener: socket.socket, level: int) -> None:
    import uvicorn

    from control_center.app import create_app

    app = create_app(settings)
    configure_logging(settings, level)  # after create_app: Litestar configures on creation
    config = uvicorn.Config(
        app,
        log_config=None,
        log_level=level,
        access_log=level <= logging.DEBUG,
        lifespan="on",
        timeout_graceful_shutdown=10,
        **settings.proxy_options(),
    )
    uvicorn.Server(config).run(sockets=[listener])
