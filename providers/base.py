"""The contract between the executor and the code that changes infrastructure.

A provider knows nothing of HTTP or of the store's tables. The executor hands it an
`ActionCall` and persists what comes back: the `ActionResult` (output, a JSON result,
the resources created or changed), in the same transaction as the task's transition.

A provider type also declares what it does (`providers.kinds`): its kinds of resource
and their operations, each with a typed parameter struct. The orchestrator plans,
validates, authorizes and publishes from those declarations; a type that declares
nothing takes free-form actions and params.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import msgspec

from providers.kinds import InvalidParams, Kind, Operation, convert_params, find_action

__all__ = [
    "JSON",
    "ActionCall",
    "ActionResult",
    "BaseProvider",
    "InvalidParams",
    "Inventory",
    "Kind",
    "Operation",
    "PermanentProviderError",
    "Provider",
    "ProviderConfigError",
    "ProviderError",
    "ProviderFactory",
    "ResourceChange",
    "ResourceNotFound",
    "planned_change",
]

JSON = dict[str, Any]


class ProviderError(Exception):
    """The action failed in a way the retry policy may try again."""


class PermanentProviderError(ProviderError):
    """The action can never succeed as asked (bad parameters): do not retry."""


class ResourceNotFound(PermanentProviderError):
    """The item an operation names does not exist (a read answers 404)."""


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
    # Optional: `kinds: ClassVar[tuple[Kind, ...]]`, what the type does, and
    # `validate(kind, operation, params)`, the instance's own checks of params at submit
    # (see `providers.kinds`; `BaseProvider` has both, and defaults for the rest).

    async def apply(self, call: ActionCall) -> ActionResult: ...

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult: ...

    async def check(self, call: ActionCall) -> ActionResult: ...

    async def cancel(self, task_id: str) -> None: ...

    async def reap(self, handle: JSON) -> None: ...

    async def finished(self, call: ActionCall) -> ActionResult | None: ...


ProviderFactory = Callable[[str, Mapping[str, Any]], Provider]
"""A provider class: called with the instance name and its configuration table."""


def planned_change(
    kind: Kind, operation: Operation, params: Mapping[str, Any]
) -> ResourceChange | None:
    """The change an operation would make, from its declaration alone: `create` and
    `delete` as such, any other mutation an `update` of the item the params name, with
    the params as its values; None for a read or an unnamed item."""
    item = kind.item_name(params)
    if item is None or not operation.mutates:
        return None
    op: Literal["create", "update", "delete"] = (
        "create"
        if operation.name == "create"
        else "delete"
        if operation.name == "delete"
        else "update"
    )
    data = {k: v for k, v in params.items() if k != kind.key}
    return ResourceChange(kind.name, item, op, data=data)


class BaseProvider:
    """What a provider type that declares its kinds gets for free.

    - `validate` converts params into the operation's struct (override it to add checks
      that depend on the instance's configuration, calling it first);
    - `compensate` applies the operation's declared undo with the params the undo's
      struct takes from the original ones (`create(name, content)` -> `delete(name)`);
      nothing when the apply changed nothing (it reported no resources); irreversible
      when the operation declares no undo;
    - `check` says what would be done; `cancel`, `reap` and `finished` do nothing (an
      interrupted attempt is retried).

    A subclass sets `type_name` and `kinds`, takes `(name, config)` and implements
    `apply`; it overrides the rest where it knows better.
    """

    type_name: ClassVar[str]
    kinds: ClassVar[tuple[Kind, ...]] = ()

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        self.name = name

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        """Params as the operation's struct; raises `InvalidParams` naming the field."""
        declared = self.operation(kind, operation)
        if declared is None:
            raise InvalidParams("", f"{kind} has no operation {operation!r}")
        return convert_params(declared, params)

    def operation(self, kind: str, operation: str) -> Operation | None:
        found = next((k for k in self.kinds if k.name == kind), None)
        return None if found is None else found.operation(operation)

    def declared(self, call: ActionCall) -> tuple[Kind, Operation]:
        """The kind and operation of a call's action; a permanent error if undeclared."""
        found = find_action(self.kinds, call.action)
        if found is None:
            supported = [k.action(op) for k in self.kinds for op in k.operations]
            raise PermanentProviderError(
                f"{self.type_name} provider: unsupported action {call.action!r} "
                f"(supported: {', '.join(supported)})"
            )
        return found

    async def apply(self, call: ActionCall) -> ActionResult:
        raise NotImplementedError

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        kind, operation = self.declared(call)
        undo = None if operation.undo is None else kind.operation(operation.undo)
        if undo is None:
            raise PermanentProviderError(f"irreversible: {call.action} has no undo")
        if not applied.resources:
            return ActionResult(output="nothing to undo")
        fields = set(undo.params.__struct_fields__)
        params = {key: value for key, value in call.params.items() if key in fields}
        return await self.apply(replace(call, action=kind.action(undo), params=params))

    async def check(self, call: ActionCall) -> ActionResult:
        """What would be done, from the declarations (`planned_change`), as check mode's
        plan reads it. A type that knows the live state overrides this; a check that
        finds nothing to do says so with `result={"change": None}`."""
        kind, operation = self.declared(call)
        named = f" {call.params.get(kind.key, '')}" if kind.key else ""
        change = planned_change(kind, operation, call.params)
        return ActionResult(
            output=f"would {operation.name} {kind.name}{named}",
            resources=() if change is None else (change,),
            reversible=operation.undo is not None,
        )

    async def cancel(self, task_id: str) -> None:
        """Nothing to stop unless the subclass says otherwise."""

    async def reap(self, handle: JSON) -> None:
        """Nothing outlives an orchestrator unless the subclass says otherwise."""

    async def finished(self, call: ActionCall) -> ActionResult | None:
        """Unknown: an interrupted attempt is retried by the task's policy."""
        return None
