"""Running schemathesis (the CLI, as users would) against a live app."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HERE = Path(__file__).resolve().parent


def fuzz(
    base_url: str,
    token: str,
    config: str,
    max_examples: int = 10,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """schemathesis with its default checks (every one: no 500, responses within the
    schema, schema-valid requests accepted and invalid ones refused, `Allow`, auth),
    tuned only where `config` (a file next to this one) says why; `env` fills the
    config's `${NAME}` placeholders."""
    return subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(HERE / config),
            "run",
            f"{base_url}/schema/openapi.json",
            "--max-examples",
            str(max_examples),
            "--header",
            f"Authorization: Bearer {token}",
            "--seed",
            "1",
            # Stateful sequences multiply the run time; each operation is still fuzzed,
            # and its coverage phase tries every boundary of its schema.
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=850,  # inside the tests' own 900 s safety net
        check=False,
        env={**os.environ, **(env or {})},
    )
