"""Seed 001's VM API (`/vms`, and `/api/v1/vms` as the seed's clients call it): a thin
adapter over `orchestrator.vms`, with the seed's field names and error codes.

Policies: the route names an action on `vms:<id>` (`orchestrator.api.security`); each VM
is then checked again with its owner (`resource.owner`), so the default
`vm_privacy_policy` keeps other users' VMs out of sight: a VM its caller may not read
is `VM_NOT_FOUND`, never listed, never counted.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from orchestrator.api.security import Security, access_of
from orchestrator.errors import DomainError, InvalidInput, VmNotFound
from orchestrator.http.access import Gatekeeper, Principal
from orchestrator.http.envelope import Envelope
from orchestrator.http.errors import Forbidden
from orchestrator.http.pagination import DEFAULT_LIMIT, Limit, Offset, check_page, page_headers
from orchestrator.vms import Change, Status, Vm, Vms

Operation = Literal["start", "stop", "restart", "force-stop"]


class VmIn(msgspec.Struct, forbid_unknown_fields=True):
    """Seed 001's body (memory in MiB, disk in GiB, `os` an image of this host's)."""

    name: str
    cpu: int | None = None
    memory: int | None = None
    disk: int | None = None
    os: str | None = None
    #: Hold the answer until the VM runs (or its create failed), up to
    #: `server.wait_timeout`.
    wait: bool = False
    #: Plan without doing anything: the workflow's tasks say what would be done.
    check_mode: bool = False


class VmUpdateIn(msgspec.Struct, forbid_unknown_fields=True):
    """A new name at any time; cpu and memory while the VM is stopped."""

    name: str | None = None
    cpu: int | None = None
    memory: int | None = None
    wait: bool = False


class VmActionIn(msgspec.Struct, forbid_unknown_fields=True):
    """The optional body of start, stop, restart and force-stop."""

    wait: bool = False


class VmOut(msgspec.Struct):
    id: str
    name: str
    cpu: int
    #: MiB.
    memory: int
    #: GiB.
    disk: int
    os: str
    status: Status
    owner: str
    created_at: str
    #: Where its forwarded ports listen (None: no network).
    ip: str | None
    ports: dict[str, int]
    #: The workflow of its last change, or of the one under way.
    workflow_id: str | None
    #: Why it is in `error`.
    error: str | None


def vm_out(vm: Vm) -> VmOut:
    return VmOut(
        id=vm.id,
        name=vm.name,
        cpu=vm.cpu,
        memory=vm.memory,
        disk=vm.disk,
        os=vm.os,
        status=vm.status,
        owner=vm.owner,
        created_at=vm.created_at,
        ip=vm.ip,
        ports=vm.ports,
        workflow_id=vm.workflow_id,
        error=vm.error,
    )


def vms_of(state: State) -> Vms:
    vms: Vms = state.vms
    return vms


Connection = ASGIConnection[Any, Any, Any, Any]


def principal_of(request: Connection) -> Principal:
    principal = access_of(request.scope).principal
    if principal is None:  # the guard let nobody in: not reached
        raise Forbidden("no authenticated user")
    return principal


def _gate(request: Connection) -> Gatekeeper:
    """The control center's authorization, as the app's guard uses it."""
    security: Security = request.app.state.security
    return security.gate


def _context(request: Connection, owner: str) -> dict[str, Any]:
    client = request.scope.get("client")
    method = request.scope.get("method", "GET")
    return {"ip": client[0] if client else None, "method": method, "owner": owner}


async def _may_read(request: Connection, vms: Vms, vm: Vm) -> bool:
    gate = _gate(request)
    return await gate.allows(
        principal_of(request), "read", vm.resource, _context(request, vm.owner)
    )


async def _authorize(request: Connection, vms: Vms, action: str, resource: str, owner: str) -> None:
    access = access_of(request.scope)
    try:
        await _gate(request).authorize(
            principal_of(request),
            action,
            resource,
            _context(request, owner),
        )
    except DomainError as exc:
        access.error, access.resource = exc, resource
        raise


async def visible(request: Connection, vms: Vms, vm_id: str, action: str) -> Vm:
    """The VM, if the caller may see it (else VM_NOT_FOUND) and do `action` to it (else
    403)."""
    vm = await vms.get(vm_id)
    if not await _may_read(request, vms, vm):
        raise VmNotFound(f"virtual machine '{vm_id}' was not found")
    if action != "read":
        await _authorize(request, vms, action, vm.resource, vm.owner)
    return vm


async def _answer(vms: Vms, change: Change, wait: bool, status: int) -> Response[Envelope[VmOut]]:
    vm: Vm | None = change.vm
    if wait:
        vm = await vms.wait(change) or change.vm
    assert vm is not None
    headers = {"Location": f"/vms/{vm.id}", "X-Workflow-Id": change.workflow_id}
    return Response(Envelope(vm_out(vm)), status_code=status, headers=headers)


class VmController(Controller):
    path = "/vms"
    tags = ["vms"]

    @get("/", summary="List your virtual machines (administrators: all)")
    async def list(
        self,
        state: State,
        request: Request[Any, Any, Any],
        status: Status | None = None,
        limit: Limit = DEFAULT_LIMIT,
        offset: Offset = 0,
    ) -> Response[Envelope[list[VmOut]]]:
        check_page(limit, offset)
        vms = vms_of(state)
        wanted = [vm for vm in await vms.all() if status is None or vm.status == status]
        checks = [(vm.resource, _context(request, vm.owner)) for vm in wanted]
        allowed = await _gate(request).allows_each(principal_of(request), "read", checks)
        visible = [vm for vm, ok in zip(wanted, allowed, strict=True) if ok]
        page = visible[offset : offset + limit]
        return Response(
            Envelope([vm_out(vm) for vm in page]),
            headers=page_headers(request, len(visible), limit, offset),
        )

    @post("/", status_code=HTTP_201_CREATED, summary="Create a virtual machine and start it")
    async def create(
        self, state: State, request: Request[Any, Any, Any], data: VmIn
    ) -> Response[Envelope[VmOut]]:
        """Answered at once with the VM (`creating`) and the workflow doing the work."""
        vms = vms_of(state)
        principal = principal_of(request)
        definition = msgspec.structs.asdict(data)
        wait, check_mode = definition.pop("wait"), definition.pop("check_mode")
        # The id is made here: the item is the VM class, owned by its creator.
        await _authorize(request, vms, "create", "vms:*", principal.user_id)
        change = await vms.create(
            definition,
            owner=principal.user_id,
            unlimited="admin" in principal.roles,
            check_mode=check_mode,
        )
        return await _answer(vms, change, wait, HTTP_201_CREATED)

    @get("/{vm_id:str}", summary="A virtual machine")
    async def show(
        self, state: State, request: Request[Any, Any, Any], vm_id: str
    ) -> Envelope[VmOut]:
        return Envelope(vm_out(await visible(request, vms_of(state), vm_id, "read")))

    @put("/{vm_id:str}", status_code=HTTP_202_ACCEPTED, summary="Rename or resize a VM")
    async def update(
        self, state: State, request: Request[Any, Any, Any], vm_id: str, data: VmUpdateIn
    ) -> Response[Envelope[VmOut]]:
        vms = vms_of(state)
        await visible(request, vms, vm_id, "update")
        updates = msgspec.structs.asdict(data)
        wait = updates.pop("wait")
        change = await vms.change(
            vm_id, "update", owner=principal_of(request).user_id, updates=updates
        )
        return await _answer(vms, change, wait, HTTP_202_ACCEPTED)

    @delete("/{vm_id:str}", status_code=HTTP_202_ACCEPTED, summary="Delete a VM and its disk")
    async def remove(
        self, state: State, request: Request[Any, Any, Any], vm_id: str, wait: bool = False
    ) -> Response[Envelope[VmOut]]:
        vms = vms_of(state)
        await visible(request, vms, vm_id, "delete")
        change = await vms.change(vm_id, "delete", owner=principal_of(request).user_id)
        return await _answer(vms, change, wait, HTTP_202_ACCEPTED)

    @post("/{vm_id:str}/start", status_code=HTTP_202_ACCEPTED, summary="Start a stopped VM")
    async def start(
        self,
        state: State,
        request: Request[Any, Any, Any],
        vm_id: str,
        wait: bool = False,
    ) -> Response[Envelope[VmOut]]:
        return await self._act(state, request, vm_id, "start", wait)

    @post(
        "/{vm_id:str}/stop",
        status_code=HTTP_202_ACCEPTED,
        summary="Stop a VM: ACPI power-off, then a hard stop after the grace",
    )
    async def stop(
        self,
        state: State,
        request: Request[Any, Any, Any],
        vm_id: str,
        wait: bool = False,
    ) -> Response[Envelope[VmOut]]:
        return await self._act(state, request, vm_id, "stop", wait)

    @post("/{vm_id:str}/restart", status_code=HTTP_202_ACCEPTED, summary="Restart a running VM")
    async def restart(
        self,
        state: State,
        request: Request[Any, Any, Any],
        vm_id: str,
        wait: bool = False,
    ) -> Response[Envelope[VmOut]]:
        return await self._act(state, request, vm_id, "restart", wait)

    @post("/{vm_id:str}/force-stop", status_code=HTTP_202_ACCEPTED, summary="End a VM at once")
    async def force_stop(
        self,
        state: State,
        request: Request[Any, Any, Any],
        vm_id: str,
        wait: bool = False,
    ) -> Response[Envelope[VmOut]]:
        return await self._act(state, request, vm_id, "force-stop", wait)

    async def _act(
        self,
        state: State,
        request: Request[Any, Any, Any],
        vm_id: str,
        operation: Operation,
        wait: bool,
    ) -> Response[Envelope[VmOut]]:
        """The body is optional (`{"wait": true}`, as `?wait=true` says too)."""
        raw = await request.body()
        if raw.strip():
            try:
                wait = msgspec.json.decode(raw, type=VmActionIn).wait or wait
            except msgspec.DecodeError as exc:
                raise InvalidInput(f"invalid request: {exc}") from None
        vms = vms_of(state)
        await visible(request, vms, vm_id, operation)
        change = await vms.change(vm_id, operation, owner=principal_of(request).user_id)
        return await _answer(vms, change, wait, HTTP_202_ACCEPTED)
