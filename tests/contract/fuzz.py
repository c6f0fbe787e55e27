"""Running schemathesis (the CLI, as users would) against a live app."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
#: No 500, nothing outside the published schema: status codes, content types, bodies,
#: headers. Not checked: that every schema-valid request is accepted, since the apps
#: also validate meaning (a configured provider, an existing infra) beyond shape.
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_schema_conformance,response_headers_conformance"
)


def fuzz(base_url: str, token: str, max_examples: int = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{base_url}/schema/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            str(max_examples),
            "--header",
            f"Authorization: Bearer {token}",
            "--seed",
            "1",
            # Stateful sequences multiply the run time; each operation is still fuzzed.
            "--phases",
            "examples,coverage,fuzzing",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
