"""The `vms` section of the Python client: seed 001's SDK calls.

    client = OrchestratorClient("http://127.0.0.1:9090/api/v1", token)
    vms = client.vms.list()
    new_vm = client.vms.create({"name": "my-vm", "cpu": 2, "memory": 2048, "disk": 20})
    client.vms.start(new_vm["id"])

VMs are dictionaries with the seed's fields (`id`, `name`, `cpu`, `memory`, `disk`,
`os`, `status`, `owner`, `created_at`, `ip`, `ports`, `workflow_id`, `error`), as the
seed's SDK returns them. Errors raise `ApiError` with the seed's codes
(`VM_NOT_FOUND`, `VM_INVALID_STATE`, `QUOTA_EXCEEDED`, `NO_HYPERVISOR`, …).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

Vm = dict[str, Any]
T = TypeVar("T")


class Caller(Protocol):
    """What the section needs of the client (`orchestrator.client.ApiClient._call`)."""

    def _call(self, method: str, path: str, data_type: type[T], **request: Any) -> T: ...


#: Seconds a call with `wait` may take: the server holds it up to its
#: `server.wait_timeout` (300 s by default).
WAIT_PATIENCE = 600.0


class VmsSection:
    def __init__(self, client: Caller) -> None:
        self._client = client

    def list(self, status: str | None = None, *, limit: int = 50, offset: int = 0) -> list[Vm]:
        """The caller's VMs (an administrator's: all), optionally those in one status."""
        query = {"status": status, "limit": limit, "offset": offset}
        return self._call(list[Vm], "GET", "/vms", params=query)

    def create(self, vm: Mapping[str, Any], *, wait: bool = False) -> Vm:
        """`{name, cpu, memory, disk, os}`: the VM at once (`creating`); with `wait`,
        once it runs (or its create failed)."""
        return self._call(Vm, "POST", "/vms", json={**vm, "wait": wait})

    def get(self, vm_id: str) -> Vm:
        return self._call(Vm, "GET", f"/vms/{_segment(vm_id)}")

    def update(self, vm_id: str, changes: Mapping[str, Any], *, wait: bool = False) -> Vm:
        return self._call(Vm, "PUT", f"/vms/{_segment(vm_id)}", json={**changes, "wait": wait})

    def delete(self, vm_id: str, *, wait: bool = False) -> Vm:
        return self._call(Vm, "DELETE", f"/vms/{_segment(vm_id)}", params={"wait": wait or None})

    def start(self, vm_id: str, *, wait: bool = False) -> Vm:
        return self._act(vm_id, "start", wait)

    def stop(self, vm_id: str, *, wait: bool = False) -> Vm:
        return self._act(vm_id, "stop", wait)

    def restart(self, vm_id: str, *, wait: bool = False) -> Vm:
        return self._act(vm_id, "restart", wait)

    def force_stop(self, vm_id: str, *, wait: bool = False) -> Vm:
        return self._act(vm_id, "force-stop", wait)

    def _act(self, vm_id: str, operation: str, wait: bool) -> Vm:
        return self._call(Vm, "POST", f"/vms/{_segment(vm_id)}/{operation}", json={"wait": wait})

    def _call(self, shape: type[T], method: str, path: str, **kwargs: Any) -> T:
        if kwargs.get("json", {}).get("wait") or kwargs.get("params", {}).get("wait"):
            kwargs["timeout"] = WAIT_PATIENCE
        return self._client._call(method, path, shape, **kwargs)


def _segment(value: str) -> str:
    return quote(value, safe="")
