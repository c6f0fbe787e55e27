"""What the `local` type does: run a command (and, to undo it, another)."""

from __future__ import annotations

from typing import Annotated

import msgspec

from providers.base import Kind, Operation

Executable = Annotated[str, msgspec.Meta(min_length=1)]


class UndoCommand(msgspec.Struct, forbid_unknown_fields=True):
    command: Executable
    args: list[str] = []
    env: dict[str, str] = {}
    cwd: str | None = None


class RunParams(msgspec.Struct):
    """An argument list, never a shell. Other params (the name of what the command acts
    on, …) are ignored; `shell` is refused."""

    command: Executable
    args: list[str] = []
    #: Merged over the environment the instance gives every command.
    env: dict[str, str] = {}
    #: Relative to the workspace, which it may not leave.
    cwd: str | None = None
    #: Run by a rollback; without it the run is irreversible.
    undo: UndoCommand | None = None


KINDS = (
    Kind(
        "command",
        "commands",
        (
            Operation(
                "run",
                RunParams,
                action="run",
                undo="run",
                stands_in=True,
                summary="run a command on this host; its `undo` command undoes it",
            ),
        ),
        key=None,
    ),
)
