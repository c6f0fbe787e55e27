"""The `qemu` provider: VMs as QEMU processes, each in its own directory."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from providers.base import (
    JSON,
    ActionCall,
    ActionResult,
    BaseProvider,
    InvalidParams,
    Kind,
    PermanentProviderError,
    ProviderError,
    ResourceChange,
    ResourceNotFound,
)
from providers.qemu._config import accelerator, missing_hypervisor, parse_config
from providers.qemu._images import NONE, Image, Images
from providers.qemu._kinds import KINDS, VmCreate, VmUpdate
from providers.qemu._machine import DISK, SERIAL, SERIAL_LOG, Definition, Machine, now
from providers.qemu._monitor import connectable

GIB = 1024**3


class QemuProvider(BaseProvider):
    """Defines, starts, stops, changes and deletes VMs (`_kinds`); see `docs/vms.md`.

    Every operation is idempotent (a start of a running VM, a stop of a stopped one, a
    delete of a missing one change nothing and say so), so an attempt interrupted by a
    crash is simply run again. Operations on one VM are serialized in this process.
    """

    type_name: ClassVar[str] = "qemu"
    #: QEMU processes run on this host: the generic entry points need `run` on
    #: `qemu:<instance>` (administrators); the VM API checks its own policies.
    touches_host: ClassVar[bool] = True
    kinds: ClassVar[tuple[Kind, ...]] = KINDS

    def __init__(self, name: str, config: Mapping[str, Any]) -> None:
        super().__init__(name, config)
        self.config = parse_config(config)
        self.vm_dir = Path(self.config.vm_dir)
        self.images = Images(
            Path(self.config.images) if self.config.images else None, self.config.qemu_img
        )
        self._locks: dict[str, asyncio.Lock] = {}

    # -- what the API asks before it submits ----------------------------------------

    def missing_hypervisor(self) -> str | None:
        """Why no VM can run here, or None."""
        return missing_hypervisor(self.config)

    def image_names(self) -> list[str]:
        return sorted(self.images.all())

    def machine(self, vm_id: str) -> Machine:
        return Machine(self.vm_dir / vm_id)

    async def open_console(self, vm_id: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the VM's serial port (one at a time: QEMU serves one client)."""
        with connectable(self.machine(vm_id).path(SERIAL)) as where:
            return await asyncio.open_unix_connection(where)

    def console_history(self, vm_id: str, limit: int) -> bytes:
        """The last `limit` bytes the guest wrote to its serial console."""
        try:
            with self.machine(vm_id).path(SERIAL_LOG).open("rb") as log:
                log.seek(0, 2)
                log.seek(max(0, log.tell() - limit))
                return log.read()
        except OSError:
            return b""

    def validate(self, kind: str, operation: str, params: Mapping[str, Any]) -> msgspec.Struct:
        """The declared struct, within this host's limits, on an image it has."""
        struct = super().validate(kind, operation, params)
        if isinstance(struct, VmCreate | VmUpdate):
            limits = (
                ("cpu", struct.cpu, self.config.max_cpu, "vCPUs"),
                ("memory", struct.memory, self.config.max_memory, "MiB"),
            )
            for field, value, limit, unit in limits:
                if value is not None and value > limit:
                    raise InvalidParams(field, f"at most {limit} {unit} on this host")
        if isinstance(struct, VmCreate):
            if struct.disk > self.config.max_disk:
                raise InvalidParams("disk", f"at most {self.config.max_disk} GiB on this host")
            image = self.images.find(struct.os)
            if image is None:
                raise InvalidParams(
                    "os", f"unknown image {struct.os!r}; available: {', '.join(self.image_names())}"
                )
            base = self._base_size(image)
            if struct.disk * GIB < base:
                need = -(-base // GIB)
                raise InvalidParams("disk", f"image {struct.os!r} needs at least {need} GiB")
        return struct

    # -- the operations --------------------------------------------------------------

    async def apply(self, call: ActionCall) -> ActionResult:
        _, operation = self.declared(call)
        vm_id = str(call.params["id"])
        if operation.name == "status":
            return self.status(vm_id)
        why = self.missing_hypervisor()
        if why is not None:
            raise PermanentProviderError(f"no hypervisor: {why}")
        async with self._locks.setdefault(vm_id, asyncio.Lock()):
            machine = self.machine(vm_id)
            match operation.name:
                case "create":
                    return await self._create(machine, call)
                case "delete":
                    return await self._delete(machine)
                case "update":
                    return self._update(machine, call.params)
            definition = self._defined(machine)
            match operation.name:
                case "start":
                    return await self._start(machine, definition)
                case "stop" | "force-stop":
                    return await self._stop(machine, definition, operation.name == "force-stop")
                case _:  # restart
                    return await self._restart(machine, definition)

    async def compensate(self, call: ActionCall, applied: ActionResult) -> ActionResult:
        """As declared; an update is undone with the values it replaced."""
        if call.action != "vm.update":
            return await super().compensate(call, applied)
        previous = applied.result.get("previous")
        if not applied.resources or not isinstance(previous, dict):
            return ActionResult(output="nothing to undo")
        return await self.apply(replace(call, params={"id": call.params["id"], **previous}))

    def status(self, vm_id: str) -> ActionResult:
        """The definition and the live state: `running` (its QEMU process is alive),
        `stopped`, or `error` (stopped after a failed start)."""
        machine = self.machine(vm_id)
        definition = machine.definition()
        if definition is None:
            raise ResourceNotFound(f"vm {vm_id} does not exist")
        running = machine.running()
        error = None if running is not None else machine.state().error
        state = "running" if running else ("error" if error else "stopped")
        result: JSON = {**msgspec.to_builtins(definition), "state": state, "error": error}
        result["pid"] = running.pid if running else None
        result["started_at"] = running.started_at if running else None
        result["ports"] = {"ssh": running.ssh_port} if running and running.ssh_port else {}
        return ActionResult(result=result)

    # -- each operation ----------------------------------------------------------------

    async def _create(self, machine: Machine, call: ActionCall) -> ActionResult:
        struct = msgspec.convert(call.params, VmCreate)
        wanted = Definition(**msgspec.structs.asdict(struct), created_at=now())
        existing = machine.definition()
        if existing is not None:
            if _same(existing, wanted):  # an interrupted attempt made it: done
                return _changed(existing, "create", "stopped", "vm already defined")
            raise PermanentProviderError(f"vm {machine.id} already exists")
        image = self._image(struct.os)
        machine.remove()  # what an interrupted attempt left (no definition: no VM)
        machine.root.mkdir(parents=True, mode=0o700)
        try:
            await self._make_disk(machine, image, struct.disk)
            machine.define(wanted)
        except BaseException:
            machine.remove()
            raise
        return _changed(wanted, "create", "stopped", f"defined vm {machine.id}")

    async def _start(self, machine: Machine, definition: Definition) -> ActionResult:
        if machine.running() is not None:
            return ActionResult(output=f"vm {machine.id} already runs")
        accel = accelerator(self.config)
        if accel is None:
            raise PermanentProviderError(f"no usable accelerator among {self.config.accel!r}")
        try:
            running = await machine.launch(self.config, accel, self._image(definition.os))
        except ProviderError as exc:
            machine.set_error(str(exc))
            raise
        machine.set_error(None)
        return _changed(
            definition, "update", "running", f"started vm {machine.id} (pid {running.pid})"
        )

    async def _stop(self, machine: Machine, definition: Definition, force: bool) -> ActionResult:
        running = machine.running()
        if running is None:
            return ActionResult(output=f"vm {machine.id} is not running")
        if force:
            await machine.kill(running)
        else:
            await machine.shut_down(running, self.config.stop_grace)
        machine.set_error(None)
        return _changed(definition, "update", "stopped", f"stopped vm {machine.id}")

    async def _restart(self, machine: Machine, definition: Definition) -> ActionResult:
        running = machine.running()
        if running is None:
            raise PermanentProviderError(f"vm {machine.id} is not running: start it")
        await machine.shut_down(running, self.config.stop_grace)
        return await self._start(machine, definition)

    def _update(self, machine: Machine, params: Mapping[str, Any]) -> ActionResult:
        struct = msgspec.convert(params, VmUpdate)
        definition = self._defined(machine)
        changes = {
            key: value
            for key, value in msgspec.structs.asdict(struct).items()
            if key != "id" and value is not None and getattr(definition, key) != value
        }
        if not changes:
            return ActionResult(output="nothing to change")
        running = machine.running()
        if running is not None and set(changes) & {"cpu", "memory"}:
            raise PermanentProviderError(
                f"vm {machine.id} is running: stop it to change cpu or memory"
            )
        previous = {key: getattr(definition, key) for key in changes}
        updated = msgspec.structs.replace(definition, **changes)
        machine.define(updated)
        status = "running" if running is not None else "stopped"
        result = _changed(updated, "update", status, f"updated {', '.join(sorted(changes))}")
        return replace(result, result={"previous": previous})

    async def _delete(self, machine: Machine) -> ActionResult:
        running = machine.running()
        if running is not None:
            await machine.kill(running)
        existed = machine.root.exists()
        machine.remove()
        return ActionResult(
            output=f"deleted vm {machine.id}" if existed else f"vm {machine.id} does not exist",
            resources=(ResourceChange("vm", machine.id, "delete"),),
            reversible=False,
        )

    # -- internals ---------------------------------------------------------------------

    def _defined(self, machine: Machine) -> Definition:
        definition = machine.definition()
        if definition is None:
            raise ResourceNotFound(f"vm {machine.id} does not exist")
        return definition

    def _image(self, name: str) -> Image:
        image = self.images.find(name)
        if image is None:
            raise PermanentProviderError(
                f"image {name!r} is gone from {self.config.images or 'the image directory'}"
            )
        return image

    def _base_size(self, image: Image) -> int:
        try:
            return self.images.virtual_size(image)
        except Exception as exc:  # unreadable, not an image, qemu-img failed or missing
            raise InvalidParams("os", f"image {image.name!r} cannot be read: {exc}") from None

    async def _make_disk(self, machine: Machine, image: Image, size_gb: int) -> None:
        argv = [self.config.qemu_img, "create", "-q", "-f", "qcow2"]
        if image.disk is not None:
            argv += ["-b", str(image.disk.resolve()), "-F", image.disk_format]
        argv += [str(machine.path(DISK)), f"{size_gb}G"]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            raise PermanentProviderError(
                f"qemu-img could not make the disk: {output.decode(errors='replace').strip()}"
            )


def _same(existing: Definition, wanted: Definition) -> bool:
    return msgspec.structs.replace(existing, created_at="") == msgspec.structs.replace(
        wanted, created_at=""
    )


def _changed(definition: Definition, op: str, status: str, output: str) -> ActionResult:
    data = msgspec.to_builtins(definition)
    return ActionResult(
        output=output,
        result={"id": definition.id, "status": status},
        resources=(ResourceChange("vm", definition.id, op, status=status, data=data),),  # type: ignore[arg-type]
    )


__all__ = ["NONE", "QemuProvider"]
