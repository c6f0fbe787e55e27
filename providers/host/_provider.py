"""The `host` provider type: the machine the orchestrator runs on, as resource kinds.

Every change is a task of a workflow (the orchestrator persists it, audits it, runs it
through its one scheduler and, where the operation declares an undo, rolls it back);
reads are answered at once. The type touches the host, so running anything on an
instance also needs `run` on `host:<instance>` (administrators only by default).

Config (the instance's table, `[providers.host]`):

- `network_namespace`: the network namespace whose interfaces it manages (absent: the
  orchestrator's own), which is how the tests run it;
- `storage.allowed_devices` (glob patterns of the devices format may touch; none by
  default) and `storage.mount_root` (where mounts may go; `/mnt` by default);
- `users.prefix` (the directory whose etc/passwd, shadow and group accounts change; `/`
  by default) and `users.shell` (new accounts' shell, `/bin/bash`);
- `journal.file` or `journal.directory`: the journal `GET /logs` reads (absent: the
  system's);
- `terminal.enabled` (false: `/ws/terminal` answers 403), `terminal.shell` and
  `terminal.recheck_interval` (`providers.host._terminal`).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import msgspec

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    PermanentProviderError,
    ProviderConfigError,
    ResourceChange,
)
from providers.host import _journal as journal
from providers.host import _network as network
from providers.host import _storage as storage
from providers.host import _system as system
from providers.host import _terminal as terminal
from providers.host import _users as users
from providers.host._privilege import CAP_NET_ADMIN, CAP_SYS_ADMIN, missing

#: `ip netns` names: a file name in /run/netns.
NAMESPACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
S = TypeVar("S", bound=msgspec.Struct)
SETTINGS = {"network_namespace", "storage", "users", "journal", "terminal"}


class HostProvider(BaseProvider):
    """The host: its interfaces (or one network namespace's), its identity and load."""

    type_name: ClassVar[str] = "host"
    touches_host: ClassVar[bool] = True
    kinds: ClassVar[tuple[Kind, ...]] = (
        network.KIND,
        system.KIND,
        storage.KIND,
        users.KIND,
        journal.KIND,
    )

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
        self.storage = storage.StorageConfig.of(config.get("storage"))
        self.users = users.UsersConfig.of(config.get("users"))
        self.journal = journal.JournalConfig.of(config.get("journal"))
        self.journal_counts = journal.Counts()
        self.terminal = terminal.TerminalConfig.of(config.get("terminal"))

    # -- submit-time checks -----------------------------------------------------------

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        struct = super().validate(kind, operation, params)
        if kind == "network":
            network.check_name(getattr(struct, "name", None))
        if isinstance(struct, network.AddressParams):
            network.address_of(struct)
        if kind == "storage":
            self._storage_checks(struct)
        if kind == "host_user":
            users.check(self.users, struct)
        if isinstance(struct, journal.LogQuery):
            journal.check(struct)
        return struct

    def _storage_checks(self, struct: msgspec.Struct) -> None:
        """The safety rules (`providers.host._storage`), from the live state: checked at
        submit, and again just before the work."""
        if isinstance(struct, storage.FormatParams):
            storage.check_label(struct)
            refusal = storage.format_refusal(storage.block_device(struct.device), self.storage)
            if refusal is not None:
                raise InvalidParams("device", refusal)
        elif isinstance(struct, storage.MountParams):
            storage.block_device(struct.device)
            storage.under_root(struct.mount_point, self.storage)
            storage.mount_options(struct.options)
        elif isinstance(struct, storage.UnmountParams):
            storage.block_device(struct.device)
            if struct.mount_point is not None:
                storage.under_root(struct.mount_point, self.storage)

    def lacks_privilege(self, kind: str, operation: str) -> str | None:
        """Why this process cannot do a change now (None: it can), for a 403 before any
        work is accepted."""
        declared = self.operation(kind, operation)
        if declared is None or not declared.mutates:
            return None
        if kind == "network":
            return missing(CAP_NET_ADMIN, "change network interfaces")
        if kind == "storage":
            return missing(CAP_SYS_ADMIN, f"{operation} devices")
        if kind == "host_user" and os.geteuid() != 0:
            return "the orchestrator's process does not run as root and so cannot change accounts"
        return None

    # -- work -------------------------------------------------------------------------

    def follow_journal(self, filters: journal.LogFilters) -> AsyncIterator[JSON]:
        """The journal's latest entries, then each new one (`/ws/logs`)."""
        return journal.follow(self.journal, filters)

    async def apply(self, call: ActionCall) -> ActionResult:
        kind, operation = self.declared(call)
        refusal = self.lacks_privilege(kind.name, operation.name)
        if refusal is not None:
            raise PermanentProviderError(f"permission denied: {refusal}")
        if kind.name == "network":
            return await self._network(operation.name, call.params)
        if kind.name == "system":
            return ActionResult(result=await system.read(operation.name))
        if kind.name == "storage":
            return await self._storage(operation.name, call.params)
        if kind.name == "host_user":
            return await self._users(operation.name, call.params)
        if kind.name == "log_entry":
            result = await journal.query(self.journal, call.params, self.journal_counts)
            return ActionResult(result=result)
        # `declared` refused every kind this provider does not declare; each declared
        # one has its branch above. Reaching here is a bug in this module.
        raise PermanentProviderError(f"host provider: declared kind '{kind.name}' has no handler")

    async def check(self, call: ActionCall) -> ActionResult:
        """What the change would do, from the live state; changes nothing."""
        kind, operation = self.declared(call)
        if kind.name == "network" and operation.mutates:
            return await self._network_plan(operation.name, call.params)
        if kind.name == "storage" and operation.mutates:
            return self._storage_plan(operation.name, call.params)
        return await super().check(call)

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """An unmount is undone by mounting again as it was (its recorded filesystem and
        options); the rest as declared."""
        if call.action == "storage.unmount" and applied.resources:
            data = applied.resources[0].data
            params = {
                "device": call.params["device"],
                "mount_point": data["mount_point"],
                "filesystem": data.get("filesystem"),
                "options": data.get("options"),
            }
            return await self.apply(replace(call, action="storage.mount", params=params))
        return await super().compensate(call, applied)

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

    # -- users ------------------------------------------------------------------------

    async def _users(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        if operation == "list":
            return ActionResult(result={"users": users.accounts(self.users)})
        struct: msgspec.Struct
        if operation == "create":
            struct = msgspec.convert(params, users.UserCreate)
        elif operation == "reset_password":
            struct = msgspec.convert(params, users.UserPassword)
        else:
            struct = msgspec.convert(params, users.UserNamed)
        name = str(params["username"])
        if isinstance(struct, users.UserNamed) and users.account(self.users, name) is None:
            return ActionResult(output=f"user {name} does not exist")  # nothing to undo
        try:
            users.check(self.users, struct)
        except InvalidParams as exc:
            raise PermanentProviderError(f"refused: {exc}") from None
        if isinstance(struct, users.UserCreate):
            await users.create(self.users, struct)
            found = users.account(self.users, name) or {}
            change = ResourceChange("host_user", name, "create", data={"uid": found.get("uid")})
            return ActionResult(output=f"created user {name}", resources=(change,))
        if isinstance(struct, users.UserPassword):
            await users.reset_password(self.users, struct)
            change = ResourceChange("host_user", name, "update", data={})
            return ActionResult(
                output=f"set the password of {name}", resources=(change,), reversible=False
            )
        assert isinstance(struct, users.UserNamed)
        await users.delete(self.users, struct)
        return ActionResult(
            output=f"deleted user {name}",
            resources=(ResourceChange("host_user", name, "delete"),),
            reversible=False,
        )

    # -- storage ----------------------------------------------------------------------

    def _checked(self, struct_type: type[S], params: Mapping[str, Any]) -> S:
        """The params again, with the safety rules on the live state: a change refused
        now fails its task for good (it never reaches the tool)."""
        struct = msgspec.convert(params, struct_type)
        try:
            self._storage_checks(struct)
        except InvalidParams as exc:
            raise PermanentProviderError(f"refused: {exc}") from None
        return struct

    async def _storage(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        if operation == "disks":
            return ActionResult(result={"disks": await storage.disks()})
        if operation == "format":
            fmt = self._checked(storage.FormatParams, params)
            device = storage.block_device(fmt.device)
            await storage.run(*storage.mkfs_command(fmt, device.path))
            data = {"filesystem": fmt.filesystem, "label": fmt.label, "path": device.path}
            return ActionResult(
                output=f"formatted {fmt.device} as {fmt.filesystem}",
                result={"device": fmt.device, **data},
                resources=(
                    ResourceChange("storage", fmt.device, "update", "formatted", data=data),
                ),
                reversible=False,
            )
        if operation == "mount":
            mnt = self._checked(storage.MountParams, params)
            device = storage.block_device(mnt.device)
            point = storage.under_root(mnt.mount_point, self.storage)
            if any(Path(m.mount_point) == point for m in storage.mounted_at(device, point.parent)):
                return ActionResult(output=f"{mnt.device} is mounted at {point} already")
            options = storage.mount_options(mnt.options)
            point.mkdir(mode=0o755, parents=True, exist_ok=True)
            argv = ["mount", "-o", ",".join(options)]
            if mnt.filesystem is not None:
                argv += ["-t", mnt.filesystem]
            await storage.run(*argv, device.path, str(point))
            mount = storage.require_mount(device, point)
            data = {
                "mount_point": str(point),
                "filesystem": mount.fstype,
                "options": ",".join(
                    o for o in mount.options.split(",") if o in storage.SAFE_OPTIONS
                ),
            }
            return ActionResult(
                output=f"mounted {mnt.device} at {point}",
                result={"device": mnt.device, **data},
                resources=(ResourceChange("storage", mnt.device, "update", "mounted", data=data),),
            )
        umnt = self._checked(storage.UnmountParams, params)
        device = storage.block_device(umnt.device)
        found = storage.mounted_at(device, self.storage.mount_root)
        if umnt.mount_point is not None:
            point = storage.under_root(umnt.mount_point, self.storage)
            found = [m for m in found if Path(m.mount_point) == point]
        if not found:
            return ActionResult(output=f"{umnt.device} is not mounted there")
        if len(found) > 1:
            points = ", ".join(m.mount_point for m in found)
            raise PermanentProviderError(f"{umnt.device} is mounted at {points}: name one")
        mount = found[0]
        await storage.run("umount", mount.mount_point)
        data = {
            "mount_point": mount.mount_point,
            "filesystem": mount.fstype,
            "options": ",".join(o for o in mount.options.split(",") if o in storage.SAFE_OPTIONS),
        }
        return ActionResult(
            output=f"unmounted {umnt.device} from {mount.mount_point}",
            result={"device": umnt.device, **data},
            resources=(ResourceChange("storage", umnt.device, "update", "unmounted", data=data),),
        )

    def _storage_plan(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        if operation == "format":
            fmt = self._checked(storage.FormatParams, params)
            command = " ".join(storage.mkfs_command(fmt, fmt.device))
            return ActionResult(output=f"would run: {command} (irreversible)", reversible=False)
        if operation == "mount":
            mnt = self._checked(storage.MountParams, params)
            options = ",".join(storage.mount_options(mnt.options))
            return ActionResult(output=f"would mount {mnt.device} at {mnt.mount_point} ({options})")
        umnt = self._checked(storage.UnmountParams, params)
        return ActionResult(output=f"would unmount {umnt.device}")

    async def _network_plan(self, operation: str, params: Mapping[str, Any]) -> ActionResult:
        name = str(params["name"])
        current = await self.netlink.interface(name)
        if operation in ("up", "down"):
            if current["state"] == operation:
                return ActionResult(
                    output=f"interface {name} is {operation} already: no change",
                    result={"change": None},
                )
            return ActionResult(output=f"would bring interface {name} {operation}")
        interface = network.address_of(msgspec.convert(params, network.AddressParams))
        present = str(interface) in current["addresses"]
        if operation == "add_address":
            said = f"{name} already has {interface}: no change" if present else None
            return _planned(said, f"would add {interface} to {name}")
        said = None if present else f"{name} has no {interface}: no change"
        return _planned(said, f"would remove {interface} from {name}")


def _planned(unchanged: str | None, change: str) -> ActionResult:
    """A check's answer: nothing to do (said so, for the plan), or what would be done."""
    if unchanged is not None:
        return ActionResult(output=unchanged, result={"change": None})
    return ActionResult(output=change)
