"""`python -m control_center [--config FILE]`: the control center on its configured port."""

from __future__ import annotations

import os
import sys

from control_center.serve import run_control_center, settings_from_environment
from orchestrator.data_dir import PRIVATE_UMASK
from orchestrator.settings import ConfigError


def main(argv: list[str]) -> int:
    config = argv[argv.index("--config") + 1] if "--config" in argv[:-1] else None
    try:
        settings = settings_from_environment(config)
    except ConfigError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    os.umask(PRIVATE_UMASK)  # the database and keys it writes are its own
    run_control_center(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
