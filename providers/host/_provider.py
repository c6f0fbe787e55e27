"""The `host` provider type: the machine the orchestrator runs on, as resource kinds.

Every change is a task of a workflow (the orchestrator persists it, audits it, runs it
through its one scheduler and, where the operation declares an undo, rolls it back);
reads are answered at once. The type touches the host, so running anything on an
instance also needs `run` on `host:<instance>` (administrators only by default).

Config (the instance's table, `[providers.host]`):

- `network_namespace`: the network namespace whose interfaces it manages (absent: the
  orchestrator's own), which is how the tests run it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from providers.base import (
    ActionCall,
    ActionResult,
    BaseProvider,
    Kind,
    PermanentProviderError,
    ProviderConfigError,
    ResourceChange,
)
from providers.host import _network as network
from providers.host._privilege import CAP_NET_ADMIN, missing

#: `ip netns` names: a file name in /run/netns.
NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
SETTINGS = {"network_namespace"}


class HostProvider(BaseProvider):
    """Interfaces of the host (or of one network namespace)."""

    type_name: ClassVar[str] = "host"
    touches_host: ClassVar[bool] = True
    kinds: ClassVar[tuple[Kind, ...]] = (network.KIND,)

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        unknown = sorted(set(config) - SETTINGS)
        if unknown:
            raise ProviderConfigError(f"unknown settings {unknown} (known: {sorted(SETTINGS)})")
        namespace = config.get("network_namespace")
        if namespace is not None and (
            not isinstance(namespace, str) or not NAMESPACE.match(namespace)
        ):
            raise ProviderConfigError("network_namespace must be a network namespace's name")
        self.netlink = network.Netlink(namespace)

    # -- submit-time checks -----------------------------------------------------------

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        struct = super().validate(kind, operation, params)
        if kind == "network":
            network.check_name(getattr(struct, "name", None))
        if isinstance(struct, network.AddressParams):
            network.address_of(struct)
        return struct

    def lacks_privilege(self, kind: str, operation: str) -> str | None:
        """Why this process cannot do a change now (None: it can), for a 403 before any
        work is accepted."""
        declared = self.operation(kind, operation)
        if declared is None or not declared.mutates:
            return None
        if kind == "network":
            return missing(CAP_NET_ADMIN, "change network interfaces")
        return None

    # -- work -------------------------------------------------------------------------

    async def apply(self, call: ActionCall) -> ActionResult:
        kind, operation = self.declared(call)
        refusal = self.lacks_privilege(kind.name, operation.name)
        if refusal is not None:
            raise PermanentProviderError(f"permission denied: {refusal}")
        if kind.name == "network":
            return await self._network(operation.name, call.params)
        raise PermanentProviderError(f"host provider: {call.action} is not implemented")

    async def check(self, call: ActionCall) -> ActionResult:
        """What the change would do, from the live state; changes nothing."""
        kind, operation = self.declared(call)
        if kind.name == "network" and operation.mutates:
            return await self._network_plan(operation.name, call.params)
        return await super().check(call)

    async def _network(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        if operation == "list":
            interfaces = await self.netlink.interfaces(params.get("name"))
            return ActionResult(result={"interfaces": interfaces})
        name = str(params["name"])
        if operation in ("up", "down"):
            changed = await self.netlink.set_state(name, operation == "up")
            done = f"interface {name} is {operation}"
            return await self._changed(name, changed, done if changed else f"{done} already")
        struct = msgspec.convert(params, network.AddressParams)
        interface = network.address_of(struct)
        if operation == "add_address":
            changed = await self.netlink.add_address(name, interface, struct.gateway)
            done = f"{interface} added to {name}" if changed else f"{name} already has {interface}"
        else:
            changed = await self.netlink.remove_address(name, interface, struct.gateway)
            done = f"{interface} removed from {name}" if changed else f"{name} has no {interface}"
        return await self._changed(name, changed, done)

    async def _changed(self, name: str, changed: bool, output: str) -> ActionResult:
        """A change reports the interface as it now is (its inventory row); no change
        reports nothing, so a rollback has nothing to undo."""
        if not changed:
            return ActionResult(output=output)
        now = await self.netlink.interface(name)
        data = {key: now[key] for key in ("state", "addresses", "mac", "mtu", "type")}
        return ActionResult(
            output=output,
            result={"interface": now},
            resources=(ResourceChange("network", name, "update", data=data),),
        )

    async def _network_plan(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        name = str(params["name"])
        current = await self.netlink.interface(name)
        if operation in ("up", "down"):
            if current["state"] == operation:
                return ActionResult(output=f"interface {name} is {operation} already: no change")
            return ActionResult(output=f"would bring interface {name} {operation}")
        interface = network.address_of(msgspec.convert(params, network.AddressParams))
        present = str(interface) in current["addresses"]
        if operation == "add_address":
            said = f"{name} already has {interface}: no change" if present else None
            return ActionResult(output=said or f"would add {interface} to {name}")
        said = None if present else f"{name} has no {interface}: no change"
        return ActionResult(output=said or f"would remove {interface} from {name}")
