"""`python -m control_center [--config FILE]`: the control center on its configured port.

`provisioning serve` starts it with `--fd N`: a listening socket it bound itself."""

from __future__ import annotations

import os
import sys

from control_center.serve import run_control_center, settings_from_environment
from orchestrator.data_dir import PRIVATE_UMASK
from orchestrator.running import CannotListen
from orchestrator.settings import ConfigError


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def main(argv: list[str]) -> int:
    config = _option(argv, "--config")
    fd = _option(argv, "--fd")
    try:
        settings = settings_from_environment(config)
        os.umask(PRIVATE_UMASK)  # the database and keys it writes are its own
        run_control_center(settings, fd=None if fd is None else int(fd))
    except (ConfigError, CannotListen) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
