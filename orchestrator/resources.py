"""Resource domains by name: which provider instance does which kind, and how.

The one place that reads what provider types declare (`providers.kinds`): built at
start-up from the configured instances, it turns `<kind>.<operation>` on an instance
into a task (planning), checks each task's params when work is submitted (every path:
explicit graphs, the infra endpoints, batches, rollbacks), names what a submission
changes as policies see it (`create` on `servers:web-01`, `run` on `local:local`) and
lists the instances, kinds and operations for the generic API. The scheduler, the
rules and the store never learn a kind's name.

A type that declares nothing keeps the free-form behaviour: any action, any params,
and policy names derived from the action (`server.create` -> `create` on
`servers:<name>`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidInput, NotFound
from orchestrator.specs import TaskSpec, WorkflowSpec
from providers.base import (
    InvalidParams,
    Kind,
    Operation,
    Provider,
    ProviderConfigError,
)
from providers.kinds import check_kinds, convert_params
from providers.registry import build_instances


@dataclass(frozen=True, slots=True)
class Declared:
    """One declared operation of one kind, on one configured instance."""

    instance: str
    type_name: str
    kind: Kind
    operation: Operation

    @property
    def action(self) -> str:
        return self.kind.action(self.operation)

    def item(self, params: Mapping[str, Any], default: str) -> str | None:
        """The item's name, as policies and the inventory know it (None: unnamed)."""
        return self.kind.item_name(params, default)


class Catalog:
    """The configured instances' kinds and operations (see the module's docstring)."""

    def __init__(self, providers: Mapping[str, Provider], types: Mapping[str, str]) -> None:
        self.providers = dict(providers)
        #: instance -> the name of its type (`sim`, `local`, …)
        self.types = {name: types[name] for name in providers}
        self._actions: dict[str, dict[str, Declared]] = {}
        for name, provider in self.providers.items():
            kinds: tuple[Kind, ...] = tuple(getattr(provider, "kinds", ()) or ())
            try:
                check_kinds(kinds)
            except ValueError as exc:
                raise ProviderConfigError(f"provider type {self.types[name]!r}: {exc}") from exc
            self._actions[name] = {
                kind.action(op): Declared(name, self.types[name], kind, op)
                for kind in kinds
                for op in kind.operations
            }
        #: Instances whose type runs things on this host (`run` on `<type>:<instance>`).
        self.host = {
            name: self.types[name]
            for name, provider in self.providers.items()
            if getattr(provider, "touches_host", False)
        }

    @classmethod
    def configure(cls, instances: Mapping[str, Mapping[str, Any]]) -> Catalog:
        """From configuration tables, as the settings give them (`{"upcloud": {"type":
        "sim"}}`)."""
        return cls(
            build_instances(instances), {name: str(t["type"]) for name, t in instances.items()}
        )

    # -- what is declared -------------------------------------------------------------

    def declares(self, instance: str) -> bool:
        """Whether the instance's type declares its kinds (else: free-form)."""
        return bool(self._actions.get(instance))

    def operations(self, instance: str) -> list[Declared]:
        return list(self._actions.get(instance, {}).values())

    def kinds(self, instance: str) -> list[Kind]:
        found: dict[str, Kind] = {}
        for declared in self.operations(instance):
            found.setdefault(declared.kind.name, declared.kind)
        return list(found.values())

    def by_action(self, instance: str, action: str) -> Declared | None:
        """The declared operation a task's action names (None: undeclared)."""
        return self._actions.get(instance, {}).get(action)

    def lookup(self, instance: str, kind: str, operation: str) -> Declared:
        """Exactly `<kind>.<operation>` on the instance; NotFound otherwise."""
        self.require(instance, "provider")
        for declared in self.operations(instance):
            if (declared.kind.name, declared.operation.name) == (kind, operation):
                return declared
        pairs = [f"{d.kind.name}/{d.operation.name}" for d in self.operations(instance)]
        raise NotFound(
            f"provider instance '{instance}' ({self.types[instance]}) has no operation "
            f"{kind}/{operation} (it has: {', '.join(pairs) or 'nothing declared'})"
        )

    def doing(self, kind: str, operation: str) -> list[str]:
        """The instances that declare `<kind>.<operation>` themselves."""
        return sorted(
            name
            for name in self._actions
            if any(
                (d.kind.name, d.operation.name) == (kind, operation) for d in self.operations(name)
            )
        )

    def require(self, instance: str, where: str) -> None:
        if instance not in self.providers:
            raise InvalidInput(
                f"{where}: '{instance}' is not a configured provider instance "
                f"(configured: {', '.join(sorted(self.providers)) or 'none'})"
            )

    # -- planning ---------------------------------------------------------------------

    def resolve(self, instance: str, kind: str, operation: str, where: str) -> Declared | None:
        """What does `<kind>.<operation>` on the instance: its own declaration, else the
        operation standing in for undeclared kinds (a `local` command); None for a type
        that declares nothing (the action is then `<kind>.<operation>`, free-form)."""
        self.require(instance, f"{where}.provider")
        if not self.declares(instance):
            return None
        stand_in = None
        for declared in self.operations(instance):
            if (declared.kind.name, declared.operation.name) == (kind, operation):
                return declared
            if declared.operation.stands_in:
                stand_in = declared
        if stand_in is None:
            raise InvalidInput(
                f"{where}.provider: '{instance}' ({self.types[instance]}) has no operation "
                f"{kind}.{operation} (it has: {self._listing(instance)})"
            )
        return stand_in

    def task(
        self,
        instance: str,
        kind: str,
        operation: str,
        *,
        name: str,
        params: dict[str, Any],
        origin: str,
    ) -> TaskSpec:
        """A task doing `<kind>.<operation>` on the instance (see `resolve`). Its seed
        `command` and `args` are the params' own where the operation takes a command,
        else `<instance> <action>` and the item's name."""
        declared = self.resolve(instance, kind, operation, origin)
        action = declared.action if declared is not None else f"{kind}.{operation}"
        fields = declared.operation.params.__struct_fields__ if declared is not None else ()
        command, args = f"{instance} {action}", [str(params.get("name", name))]
        if declared is not None:
            args = [declared.item(params, name) or name]
        if "command" in fields and isinstance(params.get("command"), str):
            raw = params.get("args", [])
            command, args = (
                params["command"],
                [str(a) for a in raw] if isinstance(raw, list) else [],
            )
        return TaskSpec(
            name=name,
            provider=instance,
            action=action,
            params=params,
            command=command,
            args=args,
            origin=origin,
        )

    # -- validation at submit ---------------------------------------------------------

    def validate(self, spec: WorkflowSpec) -> None:
        """Refuse, naming the field, a task whose instance is not configured, whose
        action its type does not declare, that only reads, or whose params its
        operation (and instance) refuse. A compensation's params are not checked again:
        it undoes what was valid when it ran."""
        for index, task in enumerate(spec.tasks):
            self.require(task.provider, f"tasks[{index}].provider")
            if not self.declares(task.provider):
                continue
            declared = self.by_action(task.provider, task.action)
            if declared is None:
                raise InvalidInput(
                    f"tasks[{index}].action: '{task.action}' is not an operation of "
                    f"'{task.provider}' ({self.types[task.provider]}); it has: "
                    f"{', '.join(d.action for d in self.operations(task.provider))}"
                )
            if task.compensates is not None:
                continue
            if not declared.operation.mutates:
                raise InvalidInput(
                    f"tasks[{index}].action: '{task.action}' only reads: ask "
                    f"POST /providers/{task.provider}/{declared.kind.name}/"
                    f"{declared.operation.name}"
                )
            self.check_params(declared, task.params, task.origin or f"tasks[{index}].params")

    def check_params(self, declared: Declared, params: Mapping[str, Any], where: str) -> None:
        """The operation's struct and the instance's own checks (`validate`)."""
        provider = self.providers[declared.instance]
        validate = getattr(provider, "validate", None)
        try:
            if validate is not None:
                validate(declared.kind.name, declared.operation.name, params)
            else:
                convert_params(declared.operation, params)
        except InvalidParams as exc:
            place = f"{where}.{exc.path}" if exc.path else where
            raise InvalidInput(f"{place}: {exc.message}") from None

    # -- policies ---------------------------------------------------------------------

    def items(self, spec: WorkflowSpec) -> list[tuple[str, str]]:
        """What a submission changes, as policies name it: `<operation>` on
        `<plural>:<name>` (`create` on `servers:web-01`), and `run` on each
        host-touching instance it uses."""
        items = set()
        for task in spec.tasks:
            item = self.item(task.provider, task.action, task.params, task.name)
            if item is not None:
                items.add(item)
        return sorted(items) + self.host_items(spec)

    def item(
        self, instance: str, action: str, params: Mapping[str, Any], default: str
    ) -> tuple[str, str] | None:
        declared = self.by_action(instance, action)
        if declared is not None:
            name = declared.item(params, default)
            return (
                None
                if name is None
                else (declared.operation.name, f"{declared.kind.plural}:{name}")
            )
        if self.declares(instance):
            return None  # not an operation of it: validation refuses the task
        kind, dot, operation = action.partition(".")
        return (operation, f"{kind}s:{params.get('name', default)}") if dot else None

    def host_items(self, spec: WorkflowSpec) -> list[tuple[str, str]]:
        """Running anything on this host is a permission of its own: `run` on
        `<type>:<instance>` (`local:local`) for each task on an instance whose type
        touches the host; only administrators have it by default (docs/security.md)."""
        return sorted(
            {
                ("run", f"{self.host[task.provider]}:{task.provider}")
                for task in spec.tasks
                if task.provider in self.host
            }
        )

    def _listing(self, instance: str) -> str:
        return ", ".join(d.action for d in self.operations(instance)) or "nothing declared"
