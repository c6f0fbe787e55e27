"""Virtual machines as seed 001 sees them, over the generic machinery (docs/vms.md).

A VM is the `vm` kind of the provider instance `vms.provider` names (the `qemu` type):
its record is the inventory row its tasks keep (the definition, with its owner), the
workflow changing it now if any, and the live state the provider reads (`vm.status`: is
its QEMU process alive). Every change is a workflow submitted here and answered at once;
the seed's statuses are derived:

| seed status | when |
|---|---|
| `creating`, `starting`, `stopping`, `deleting` | a workflow doing that is pending or running |
| `running`, `stopped` | no workflow runs, and the provider finds its process alive, or not |
| `error` | no workflow runs, and its last start failed (or its directory is gone) |

A failed create is undone (its workflow rolls back): the VM is then gone, and its
workflow says why. Policies and quotas are the caller's (the controller's) and this
module's: a VM belongs to its creator; one user who is not an administrator may have
`vms.quota_per_user` of them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.errors import (
    InvalidInput,
    NoHypervisor,
    NotFound,
    QuotaExceeded,
    VmInvalidState,
    VmNotFound,
)
from orchestrator.ids import new_id
from orchestrator.service import Orchestrator
from orchestrator.specs import TaskSpec, WorkflowSpec
from orchestrator.store.workflows import get_resource, list_resources, workflows_in

KIND = "vm"
STATUSES = ("creating", "stopped", "starting", "running", "stopping", "deleting", "error")
Status = Literal["creating", "stopped", "starting", "running", "stopping", "deleting", "error"]
#: What an operation's workflow shows while it runs.
DOING: dict[str, Status] = {
    "create": "creating",
    "start": "starting",
    "stop": "stopping",
    "force-stop": "stopping",
    "restart": "starting",
    "delete": "deleting",
}
#: The states each operation applies to (else 409 VM_INVALID_STATE).
ALLOWED: dict[str, tuple[str, ...]] = {
    "start": ("stopped", "error"),
    "stop": ("running",),
    "force-stop": ("running",),
    "restart": ("running",),
    "delete": ("running", "stopped", "error"),
}
_ACTIVE = ("Pending", "Running", "RollingBack")
_DEFINITION = ("id", "name", "cpu", "memory", "disk", "os", "owner", "created_at")


@dataclass(slots=True)
class Vm:
    """One VM's record (the seed's fields)."""

    id: str
    name: str
    cpu: int
    memory: int
    disk: int
    os: str
    owner: str
    created_at: str
    status: Status
    #: The workflow of its last change (or the one running now).
    workflow_id: str | None = None
    error: str | None = None
    ip: str | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def resource(self) -> str:
        """How policies name it."""
        return f"vms:{self.id}"


@dataclass(frozen=True, slots=True)
class Change:
    """A change asked for: the VM as it now is (a transitional status) and its workflow."""

    vm: Vm
    workflow_id: str


class Vms:
    """The VM domain of one orchestrator."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self.orchestrator = orchestrator
        self.settings = orchestrator.settings.vms
        self.instance = self.settings.provider
        # Checks then submissions, one at a time in this process: two requests do not
        # both pass a quota or a state check that only one of them may.
        self._deciding = asyncio.Lock()
        #: VMs whose console is open (a serial port has one user at a time).
        self.consoles: set[str] = set()
        #: VMs by status, as `/metrics` last counted them (`orchestrator_vms`).
        self.counts: Counter[str] = Counter()
        orchestrator.metrics.registry.register(_VmGauge(self.counts))

    # -- reading ----------------------------------------------------------------------

    async def all(self, *, live: bool = True) -> list[Vm]:
        """Every VM, oldest first, with its live status (`live`: else as last recorded,
        enough to count them)."""
        if self.instance not in self.orchestrator.providers:
            return []
        # Workflows first, rows second: a change that ends between the two reads is
        # then seen as under way or as done, never as a row whose machine is gone.
        active = await self._active()
        rows = await list_resources(self.orchestrator.engine, self.instance, KIND)
        return await self._records(rows, active, live=live)

    async def get(self, vm_id: str) -> Vm:
        if self.instance in self.orchestrator.providers:
            active = [w for w in await self._active() if _vm_of(w) == vm_id]  # first: see all()
            row = await get_resource(self.orchestrator.engine, self.instance, KIND, vm_id)
            for vm in await self._records([row] if row else [], active):
                return vm
        raise VmNotFound(f"virtual machine '{vm_id}' was not found")

    async def _records(
        self, rows: list[dict[str, Any]], active: list[dict[str, Any]], *, live: bool = True
    ) -> list[Vm]:
        """Inventory rows and the workflows under way (newest first), as VMs."""
        found: dict[str, Vm] = {}
        for row in rows:
            vm = _record(row["data"], "stopped", row["workflow_id"])
            found[vm.id] = vm
        for workflow in reversed(active):  # oldest first: the newest one wins
            vm_id, request = _vm_of(workflow), workflow["spec"]
            if vm_id is None:
                continue
            if vm_id not in found:
                if request.get("operation") != "create":
                    continue
                found[vm_id] = _record(request["vm"], "creating", None)
            found[vm_id].status = DOING.get(request.get("operation", ""), found[vm_id].status)
            found[vm_id].workflow_id = workflow["id"]
        busy = {_vm_of(w) for w in active}
        if live:
            await asyncio.gather(*(self._live(vm) for vm in found.values() if vm.id not in busy))
        return sorted(found.values(), key=lambda vm: (vm.created_at, vm.id))

    async def count(self) -> None:
        """Count the VMs by status for `/metrics` (every status, 0 included)."""
        found: Counter[str] = Counter(vm.status for vm in await self.all())
        self.counts.clear()
        self.counts.update({status: found.get(status, 0) for status in STATUSES})

    # -- changing ---------------------------------------------------------------------

    def available(self) -> None:
        """Raise `NoHypervisor` unless VMs can run here."""
        provider = self.orchestrator.providers.get(self.instance)
        if (
            provider is None
            or self.orchestrator.catalog.by_action(self.instance, "vm.create") is None
        ):
            raise NoHypervisor(
                f"no provider instance '{self.instance}' runs virtual machines "
                "(vms.provider names one whose type declares vm, such as qemu)"
            )
        why = getattr(provider, "missing_hypervisor", lambda: None)()
        if why:
            raise NoHypervisor(f"virtual machines cannot run on this host: {why}")

    async def create(
        self,
        definition: Mapping[str, Any],
        *,
        owner: str,
        unlimited: bool,
        check_mode: bool = False,
    ) -> Change:
        """Define and start a VM (`definition`: seed 001's name, cpu, memory, disk, os)."""
        self.available()
        vm_id = new_id()
        params = {
            **{k: v for k, v in definition.items() if v is not None},
            "id": vm_id,
            "owner": owner,
        }
        async with self._deciding:
            await self._check_quota(params, owner, unlimited)
            tasks = [
                self._task("create", params),
                self._task("start", {"id": vm_id}, after="create"),
            ]
            record = {**params, "created_at": _now()}
            workflow_id = await self._submit(
                "create", vm_id, tasks, owner, check_mode, record=record, rollback=True
            )
        return Change(_record(record, "creating", workflow_id), workflow_id)

    async def change(
        self,
        vm_id: str,
        operation: str,
        *,
        owner: str,
        updates: Mapping[str, Any] | None = None,
    ) -> Change:
        """Start, stop, force-stop, restart, update or delete a VM, if its state allows."""
        self.available()
        async with self._deciding:
            vm = await self.get(vm_id)
            if vm.status in DOING.values():
                raise VmInvalidState(
                    f"virtual machine '{vm_id}' is {vm.status} (workflow {vm.workflow_id}): "
                    "wait for it to end"
                )
            tasks = self._plan(vm, operation, updates or {})
            workflow_id = await self._submit(operation, vm_id, tasks, owner, False, record=None)
        vm.status = DOING.get(operation, vm.status)
        vm.workflow_id = workflow_id
        if updates:
            for key, value in updates.items():
                if value is not None:
                    setattr(vm, key, value)
        return Change(vm, workflow_id)

    async def console(
        self, vm_id: str, history: int
    ) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
        """What the VM's serial console showed last (`history` bytes at most), and a
        connection to it; `OSError` if it does not answer."""
        provider: Any = self.orchestrator.providers.get(self.instance)
        if not hasattr(provider, "open_console"):
            raise NoHypervisor(f"provider instance '{self.instance}' has no serial consoles")
        reader, writer = await provider.open_console(vm_id)
        shown: bytes = provider.console_history(vm_id, history)
        return shown, reader, writer

    async def wait(self, change: Change) -> Vm | None:
        """The VM once the change's workflow ended (up to `server.wait_timeout`); None if
        it is gone (deleted, or its create undone)."""
        await self.orchestrator.wait(
            change.workflow_id, self.orchestrator.settings.server.wait_timeout
        )
        try:
            return await self.get(change.vm.id)
        except VmNotFound:
            return None

    # -- internals --------------------------------------------------------------------

    def _plan(self, vm: Vm, operation: str, updates: Mapping[str, Any]) -> list[TaskSpec]:
        if operation == "update":
            sizes = {k for k in ("cpu", "memory") if updates.get(k) not in (None, getattr(vm, k))}
            if sizes and vm.status == "running":
                raise VmInvalidState(
                    f"virtual machine '{vm.id}' is running: stop it to change "
                    f"{' and '.join(sorted(sizes))}"
                )
            params = {"id": vm.id, **{k: v for k, v in updates.items() if v is not None}}
            return [self._task("update", params)]
        allowed = ALLOWED[operation]
        if vm.status not in allowed:
            raise VmInvalidState(
                f"virtual machine '{vm.id}' is {vm.status}: {operation} needs it "
                f"{' or '.join(allowed)}"
            )
        ref = {"id": vm.id}
        if operation == "delete" and vm.status == "running":
            return [
                self._task("force-stop", ref),
                self._task("delete", ref, after="force-stop"),
            ]
        return [self._task(operation, ref)]

    def _task(self, operation: str, params: dict[str, Any], after: str | None = None) -> TaskSpec:
        """A task named after its operation (the workflow's name says which VM)."""
        task = self.orchestrator.catalog.task(
            self.instance, KIND, operation, name=operation, params=params, origin="vm"
        )
        task.dependencies = [after] if after else []
        return task

    async def _submit(
        self,
        operation: str,
        vm_id: str,
        tasks: list[TaskSpec],
        owner: str,
        check_mode: bool,
        *,
        record: dict[str, Any] | None,
        rollback: bool = False,
    ) -> str:
        for task in tasks:
            if rollback:
                task.on_failure = "rollback"
        spec = WorkflowSpec(
            kind=KIND,
            name=f"{operation} vm {vm_id}",
            tasks=tasks,
            rollback_enabled=rollback,
            check_mode=check_mode,
            request={"operation": operation, "vm": record or {"id": vm_id}},
        )
        return await self.orchestrator.submit(spec, owner=owner)

    async def _check_quota(self, params: Mapping[str, Any], owner: str, unlimited: bool) -> None:
        # The struct's defaults, for what the request left out.
        cpu, memory = int(params.get("cpu", 1)), int(params.get("memory", 512))
        vms = await self.all(live=False)
        if not unlimited and self.settings.quota_per_user:
            mine = sum(1 for vm in vms if vm.owner == owner)
            if mine >= self.settings.quota_per_user:
                raise QuotaExceeded(
                    f"quota exceeded: you have {mine} virtual machines, at most "
                    f"{self.settings.quota_per_user} per user (vms.quota_per_user)",
                    {"vms": mine, "quota": self.settings.quota_per_user},
                )
        limits = (
            ("cpu", "vCPUs", cpu, sum(vm.cpu for vm in vms), self.settings.max_total_cpu),
            ("memory", "MiB", memory, sum(vm.memory for vm in vms), self.settings.max_total_memory),
        )
        for key, unit, asked, used, limit in limits:
            if limit and used + asked > limit:
                raise QuotaExceeded(
                    f"quota exceeded: {asked} {unit} more would make {used + asked} of at most "
                    f"{limit} for all virtual machines (vms.max_total_{key})",
                    {"asked": asked, "used": used, "limit": limit},
                )

    async def _active(self) -> list[dict[str, Any]]:
        """The VM workflows pending or running now (check-mode ones change nothing),
        newest first."""
        rows = await workflows_in(self.orchestrator.engine, KIND, _ACTIVE, 1000)
        return [row for row in rows if not row["check_mode"]]

    async def _live(self, vm: Vm) -> None:
        declared = self.orchestrator.catalog.by_action(self.instance, "vm.status")
        if declared is None:
            return
        try:
            state = await self.orchestrator.read(declared, {"id": vm.id})
        except NotFound:
            vm.status, vm.error = "error", "its directory is gone from this host"
            return
        except InvalidInput as exc:  # pragma: no cover - an id the provider refuses
            vm.status, vm.error = "error", exc.message
            return
        except Exception as exc:
            vm.status, vm.error = "error", f"its state cannot be read: {exc}"
            return
        status = state.get("state")
        vm.status = status if status in ("running", "stopped", "error") else "error"
        vm.error = state.get("error")
        vm.ports = dict(state.get("ports") or {})
        vm.ip = "127.0.0.1" if vm.ports else None


class _VmGauge(Collector):
    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts

    def collect(self) -> list[GaugeMetricFamily]:  # type: ignore[override]
        family = GaugeMetricFamily(
            "orchestrator_vms", "Virtual machines by status", labels=["status"]
        )
        for status, count in sorted(self._counts.items()):
            family.add_metric([status], count)
        return [family]


def _vm_of(workflow: Mapping[str, Any]) -> str | None:
    """The id of the VM a workflow changes (its request says)."""
    vm = (workflow.get("spec") or {}).get("vm")
    vm_id = vm.get("id") if isinstance(vm, dict) else None
    return vm_id if isinstance(vm_id, str) else None


def _record(data: Mapping[str, Any], status: Status, workflow_id: str | None) -> Vm:
    values = {key: data.get(key) for key in _DEFINITION}
    return Vm(
        id=str(values["id"]),
        name=str(values["name"] or ""),
        cpu=int(values["cpu"] or 1),
        memory=int(values["memory"] or 512),
        disk=int(values["disk"] or 10),
        os=str(values["os"] or "none"),
        owner=str(values["owner"] or ""),
        created_at=str(values["created_at"] or _now()),
        status=status,
        workflow_id=workflow_id,
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
