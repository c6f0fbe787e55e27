"""What a provider type declares it does: kinds of resource and their operations.

A `Kind` (`server`, `file`) names how one item is named (`key`, the parameter holding its
name: the policy resource `<plural>:<name>` and the inventory row) and lists its
`Operation`s. An operation has a typed parameter struct (msgspec, validated when work is
submitted and published in the OpenAPI document), says whether it mutates (then it runs
as a task of a workflow) or only reads (then it is answered at once), and names its
undo, another operation of the same kind, or none when it cannot be undone.

Re-exported by `providers.base`, the provider contract.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

#: msgspec's "… - at `$.simulate.fail`" and "… field `plan`".
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`$")


class InvalidParams(ValueError):
    """Params an operation cannot take. `path` locates the field inside the params
    (`plan`, `simulate.fail`; empty for the params as a whole)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Operation:
    """One thing a provider type does to a kind of resource."""

    name: str
    #: The params, as a msgspec struct (unknown fields are refused unless the struct
    #: lets them through: `forbid_unknown_fields=False` is msgspec's default).
    params: type[msgspec.Struct]
    #: True: it changes something and runs as a task. False: it only reads, and is
    #: answered at once (`POST /providers/{instance}/{kind}/{operation}`).
    mutates: bool = True
    #: The operation of the same kind that undoes this one (`create` -> `delete`), or
    #: None: a rollback reports the task as irreversible.
    undo: str | None = None
    #: How tasks spell it, when not `<kind>.<operation>` (the `local` type's `run`).
    action: str | None = None
    #: It does any kind's operation the type does not declare (a `local` command that
    #: creates an infra's server): planning falls back on it.
    stands_in: bool = False
    summary: str = ""


@dataclass(frozen=True, slots=True)
class Kind:
    """A kind of resource and what a provider type does to it."""

    name: str
    #: How policies name its items: `<plural>:<name>` (`servers:web-01`).
    plural: str
    operations: tuple[Operation, ...]
    #: The parameter that names an item: the policy resource's name and the inventory
    #: row's. None for a kind whose items have no name (a command).
    key: str | None = "name"
    #: A parameter that qualifies the name, for items that exist once per something else
    #: (a taskserv per server): the item is then `<name>@<scope value>` (`k8s@web-01`),
    #: for policies and the inventory alike.
    scope: str | None = None
    summary: str = ""

    def item_name(self, params: Mapping[str, Any], default: str | None = None) -> str | None:
        """The name policies and the inventory give the item the params name (None: the
        kind's items are unnamed, or the params name none and there is no default)."""
        if self.key is None:
            return None
        value = params.get(self.key)
        name = default if value is None else str(value)
        qualifier = None if self.scope is None else params.get(self.scope)
        return name if name is None or qualifier is None else f"{name}@{qualifier}"

    def operation(self, name: str) -> Operation | None:
        return next((op for op in self.operations if op.name == name), None)

    def action(self, operation: Operation) -> str:
        """The task action of one of its operations."""
        return operation.action or f"{self.name}.{operation.name}"


def find_action(kinds: Iterable[Kind], action: str) -> tuple[Kind, Operation] | None:
    """The kind and operation a task's action names, if declared."""
    for kind in kinds:
        for operation in kind.operations:
            if kind.action(operation) == action:
                return kind, operation
    return None


def convert_params(operation: Operation, params: Mapping[str, Any]) -> msgspec.Struct:
    """The params as the operation's struct; raises `InvalidParams` naming the field."""
    try:
        return msgspec.convert(params, operation.params)
    except msgspec.ValidationError as exc:
        raise _located(str(exc)) from None


def _located(message: str) -> InvalidParams:
    path = ""
    at = _AT.search(message)
    if at is not None:
        path, message = at["path"].removeprefix("."), message[: at.start()]
    field = _FIELD.match(message)
    if field is not None:
        path = f"{path}.{field['name']}" if path else field["name"]
        message = "required" if field["what"] == "missing required" else "unknown field"
    return InvalidParams(path, message)


def check_kinds(kinds: Iterable[Kind]) -> None:
    """Refuse declarations that contradict themselves; raises ValueError saying how."""
    actions: set[str] = set()
    stand_ins = 0
    for kind in kinds:
        for operation in kind.operations:
            action = kind.action(operation)
            if action in actions:
                raise ValueError(f"action {action!r} is declared twice")
            actions.add(action)
            stand_ins += operation.stands_in
            if operation.undo is not None and kind.operation(operation.undo) is None:
                raise ValueError(
                    f"{action}: its undo {operation.undo!r} is not an operation of {kind.name}"
                )
            if not isinstance(operation.params, type) or not issubclass(
                operation.params, msgspec.Struct
            ):
                raise ValueError(f"{action}: params must be a msgspec.Struct type")
    if stand_ins > 1:
        raise ValueError("at most one operation stands in for undeclared kinds")
