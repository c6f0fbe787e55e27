"""The field types requests are made of, each with the one rule it follows.

The rules are `msgspec.Meta` constraints, so the decoder enforces them and the published
OpenAPI documents state them (`orchestrator.http.openapi`). Names and identifiers never
hold control characters (C0, DEL, C1); free text may hold newlines and tabs, never NUL,
which PostgreSQL cannot store.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

#: No control character at all (for names, identifiers, patterns).
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
#: No NUL (for free text; path and query parameters are held to it too).
NO_NUL = r"^[^\x00]*$"

#: A display name (a workflow's, a checkpoint's, an API key's, a policy's).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_CONTROL)]
#: What names a thing other names refer to: a batch operation, a server, a taskserv, an
#: infra. At most 60 characters, so a task named after an operation and two of them
#: (`<operation>/taskserv <taskserv> on <server>`) fits the store's 200.
Identifier = Annotated[
    str, msgspec.Meta(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.:@-]+$")
]
#: A version string (`1.0.0`).
Version = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=NO_CONTROL)]
#: A stored id (checkpoints, workflows): looked up, so any printable string.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=NO_CONTROL)]
#: Free text: descriptions, commands, arguments, paths.
Text = Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)]
#: An environment variable's name.
EnvName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
]

#: How many of a workflow's tasks run at once: one rule for every way of submitting one.
MAX_PARALLEL_LIMIT = 1000
ParallelLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_PARALLEL_LIMIT)]
