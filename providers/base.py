"""The contract between the executor and the code that changes infrastructure.

A provider knows nothing of HTTP or of the store's tables. The executor hands it an
`ActionCall` and persists what comes back: the `ActionResult` (output, a JSON result,
the resources created or changed), in the same transaction as the task's transition.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

JSON = dict[str, Any]


class ProviderError(Exception):
    """The action failed in a way the retry policy may try again."""


class PermanentProviderError(ProviderError):
    """The action can never succeed as asked (bad parameters): do not retry."""


class ProviderConfigError(Exception):
    """A provider instance's configuration is invalid (raised at start-up)."""


@dataclass(frozen=True, slots=True)
class ResourceChange:
    """An inventory row a provider created, changed or removed.

    `data` holds what an undo needs; the store links the row to the task that made it.
    """

    kind: str
    name: str
    op: Literal["create", "update", "delete"]
    status: str = "active"
    data: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ActionResult:
    output: str = ""
    result: JSON = field(default_factory=dict)
    resources: tuple[ResourceChange, ...] = ()
    #: False when the action cannot be undone (a disk format): rollback reports it.
    reversible: bool = True


class Inventory(Protocol):
    """A read-only view of the resources one provider instance has recorded."""

    async def get(self, kind: str, name: str) -> JSON | None: ...

    async def list(self, kind: str) -> list[JSON]: ...


@dataclass(frozen=True, slots=True)
class ActionCall:
    """One attempt of one task, as the provider sees it."""

    task_id: str
    workflow_id: str
    instance: str
    action: str
    params: JSON
    attempt: int
    timeout: float | None
    workspace: Path
    inventory: Inventory
    #: Called by a provider once it has something to stop later (a process group id):
    #: the executor records it so a restarted orchestrator can stop a leftover. The work
    #: does not begin until `on_handle` has returned (a provider that cannot hold it back
    #: says so in its documentation): a crash before the handle is recorded must not
    #: leave work running that nobody can find, then run it a second time beside it.
    #: If `on_handle` raises, the work never begins.
    on_handle: Callable[[JSON], Awaitable[None]] | None = None
    #: Files and directories of the orchestrator that the work must not read (its data
    #: directory, with the signing key and the database; its configuration file).
    protected_paths: tuple[Path, ...] = ()


@runtime_checkable
class Provider(Protocol):
    """What every provider type implements.

    - `apply` performs the action and returns what it did; raise `ProviderError` to fail
      (retried by the task's policy) or `PermanentProviderError` (never retried).
    - `compensate` undoes a completed `apply`, given its result.
    - `check` plans without changing anything (`check_mode`).
    - `cancel` stops a running `apply` of the task (kill a process group, …).
    - `reap` stops what a previous, crashed orchestrator left running, from its handle.
    - `finished` tells what an attempt interrupted by such a crash achieved, if the
      provider knows it completed (then it is recorded, not run again); None otherwise
      (the attempt counts as failed and is retried by the task's policy).
    """

    type_name: ClassVar[str]
    # Optional: `touches_host: ClassVar[bool] = True` on a type that runs things on the
    # orchestrator's own host (processes, mounts, users); running a task on such an
    # instance needs the policy action `run` on `<type>:<instance>`.

    async def apply(self, call: ActionCall) -> ActionResult: ...

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult: ...

    async def check(self, call: ActionCall) -> ActionResult: ...

    async def cancel(self, task_id: str) -> None: ...

    async def reap(self, handle: JSON) -> None: ...

    async def finished(self, call: ActionCall) -> ActionResult | None: ...


ProviderFactory = Callable[[str, Mapping[str, Any]], Provider]
"""A provider class: called with the instance name and its configuration table."""
