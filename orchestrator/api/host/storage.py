"""Seed 000's storage endpoints over the `host` provider's `storage` kind.

`GET /storage/disks` reads at once; format, mount and unmount are one-task workflows
answered 202 with their id (`wait` in the body holds the answer until it ends). The
safety rules (allow-listed devices, nothing mounted or holding a system filesystem is
formatted, mount points under the mount root) are the provider's, checked at submit (a
422 naming the field) and again before the work.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_202_ACCEPTED

from orchestrator.api.host.common import Change, ChangeOut, host_change, host_read
from orchestrator.api.host.network import Instance
from orchestrator.http.envelope import Envelope
from providers.host._storage import Device, Filesystem, Label, MountPoint, Options


class DisksOut(msgspec.Struct):
    #: name, path, size, model, type (ssd, hdd, loop, …), filesystem, label,
    #: mount_point(s), used, available, partitions[same fields]
    disks: list[dict[str, Any]]


class FormatIn(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    filesystem: Filesystem = "ext4"
    label: Label | None = None
    check_mode: bool = False
    wait: bool = False


class MountIn(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    mount_point: MountPoint
    filesystem: Filesystem | None = None
    #: Comma-separated, from a short list (`rw,noatime`); `nosuid,nodev` are added.
    options: Options | None = None
    check_mode: bool = False
    wait: bool = False


class UnmountIn(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    mount_point: MountPoint | None = None
    check_mode: bool = False
    wait: bool = False


def _params(data: msgspec.Struct) -> dict[str, Any]:
    """The operation's params: the body without the run options and absent fields."""
    return {
        key: value
        for key, value in msgspec.structs.asdict(data).items()
        if key not in ("check_mode", "wait") and value is not None
    }


class StorageController(Controller):
    path = "/storage"
    tags = ["host"]

    @get("/disks", summary="Disks with their partitions, filesystems, mounts and space")
    async def disks(self, state: State, instance: Instance = None) -> Envelope[DisksOut]:
        found = await host_read(state, "storage", "disks", {}, instance)
        return Envelope(DisksOut(disks=found["disks"]))

    @post("/format", status_code=HTTP_202_ACCEPTED, summary="Format a device (irreversible)")
    async def format(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: FormatIn,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "storage",
            "format",
            _params(data),
            Change(data.check_mode, data.wait),
            instance,
            f"format {data.device} as {data.filesystem}",
        )

    @post("/mount", status_code=HTTP_202_ACCEPTED, summary="Mount a filesystem")
    async def mount(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: MountIn,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "storage",
            "mount",
            _params(data),
            Change(data.check_mode, data.wait),
            instance,
            f"mount {data.device} at {data.mount_point}",
        )

    @post("/unmount", status_code=HTTP_202_ACCEPTED, summary="Unmount a filesystem")
    async def unmount(
        self,
        state: State,
        request: Request[Any, Any, Any],
        data: UnmountIn,
        instance: Instance = None,
    ) -> Response[Envelope[ChangeOut]]:
        return await host_change(
            state,
            request,
            "storage",
            "unmount",
            _params(data),
            Change(data.check_mode, data.wait),
            instance,
            f"unmount {data.device}",
        )
