"""What the `qemu` type does to a virtual machine, and the params each operation takes.

A VM is named by its `id` (chosen by the caller: the VM API gives a time-ordered UUID),
so policies name it `vms:<id>` and the inventory keeps one row per id. Its `name` is a
label for people, free to repeat.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from providers.base import Kind, Operation

#: A VM's id: also the name of its directory, so one path segment and nothing more.
VmId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
#: A label: printable, no `/` (it may appear in paths people build), no control character.
VmName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^/\x00-\x1f\x7f]+$")]
#: An image in the instance's image directory (`none`: a blank disk).
ImageName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
#: The structural bounds; each instance sets tighter ones (`max_cpu`, …), checked in
#: `validate` with a message naming them.
Cpus = Annotated[int, msgspec.Meta(ge=1, le=256)]
MemoryMb = Annotated[int, msgspec.Meta(ge=16, le=4 * 1024 * 1024)]
DiskGb = Annotated[int, msgspec.Meta(ge=1, le=64 * 1024)]


class VmCreate(msgspec.Struct, forbid_unknown_fields=True):
    """A VM's definition (seed 001's fields, plus its id and owner)."""

    id: VmId
    name: VmName
    cpu: Cpus = 1
    #: MiB.
    memory: MemoryMb = 512
    #: GiB: the size of its disk (at least its image's).
    disk: DiskGb = 10
    os: ImageName = "none"
    #: The id of the user it belongs to (`resource.owner` in policies); the VM API sets
    #: it to the caller.
    owner: str = ""


class VmRef(msgspec.Struct, forbid_unknown_fields=True):
    id: VmId


class VmUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """A new name at any time; cpu and memory while the VM is stopped."""

    id: VmId
    name: VmName | None = None
    cpu: Cpus | None = None
    memory: MemoryMb | None = None


VM = Kind(
    "vm",
    "vms",
    (
        Operation("create", VmCreate, undo="delete", summary="define a VM and make its disk"),
        Operation("start", VmRef, undo="stop", summary="boot a VM (its QEMU process)"),
        Operation(
            "stop", VmRef, undo="start", summary="ACPI power-off, then a hard stop after a grace"
        ),
        Operation("force-stop", VmRef, undo="start", summary="end a VM's QEMU process at once"),
        # Its undo makes sure the VM runs, as it did before (it had to, to restart).
        Operation("restart", VmRef, undo="start", summary="stop a running VM, then start it"),
        Operation("update", VmUpdate, undo="update", summary="rename; cpu and memory when stopped"),
        # No undo: the disk is gone, so a rollback reports it irreversible.
        Operation("delete", VmRef, summary="stop a VM if it runs, remove it and its disk"),
        Operation("status", VmRef, mutates=False, summary="a VM's definition and live state"),
    ),
    key="id",
    summary="a virtual machine run by QEMU",
)

KINDS = (VM,)
