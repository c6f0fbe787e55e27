"""The `storage` kind: block devices, filesystems and mounts of the host.

The tree of devices comes from `lsblk --json --bytes` (util-linux): it walks sysfs for
disks, partitions, sizes, models and rotation, reads the mount table and measures used
and available space of what is mounted, which sysfs alone does not give and psutil only
gives for mounted filesystems. Without a udev database (a container, a minimal VM) lsblk
leaves the filesystem type and label empty, so those come from `blkid -p` (a direct
probe of the device) where lsblk has none.

Changes run the system's tools with argument lists: `mkfs.<filesystem>`, `mount`,
`umount`. Safety, checked when work is submitted and again just before it runs:

- format: only a block device the instance's `allowed_devices` globs match (none by
  default: formatting is off until configured), never one mounted (itself or a
  partition of it), in use by another device (LVM, RAID, …), used as swap, or holding
  the root filesystem; irreversible, so a rollback reports it;
- mount and unmount: mount points under `mount_root` only (symbolic links resolved);
  options from a short list (`nosuid,nodev` are always added);
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from providers.base import (
    JSON,
    InvalidParams,
    Kind,
    Operation,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ResourceNotFound,
)

#: A device path: /dev/ and a name, no `..`.
DEVICE = r"^/dev/[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,127}$"
Device = Annotated[str, msgspec.Meta(pattern=DEVICE, description="a block device: /dev/…")]
MountPoint = Annotated[
    str, msgspec.Meta(pattern=r"^/[A-Za-z0-9_.@/+-]{0,254}$", description="an absolute path")
]
Filesystem = Literal["ext4", "ext3", "ext2", "xfs", "btrfs", "vfat"]
Label = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,16}$")]
#: Mount options a caller may ask for, comma-separated.
Options = Annotated[str, msgspec.Meta(max_length=200)]
SAFE_OPTIONS = frozenset(
    {
        "defaults",
        "ro",
        "rw",
        "noatime",
        "relatime",
        "nodiratime",
        "lazytime",
        "strictatime",
        "nodev",
        "nosuid",
        "noexec",
        "sync",
        "async",
        "discard",
        "nodiscard",
    }
)
#: Label lengths each filesystem takes.
LABEL_LENGTH = {"ext4": 16, "ext3": 16, "ext2": 16, "xfs": 12, "btrfs": 16, "vfat": 11}
#: Mount points of the system itself: a device holding one is never formatted.
SYSTEM_MOUNTS = frozenset(
    {"/", "/boot", "/boot/efi", "/usr", "/var", "/etc", "/home", "/opt", "/srv", "/nix"}
)
LSBLK_COLUMNS = "NAME,PATH,SIZE,MODEL,TYPE,ROTA,FSTYPE,LABEL,MOUNTPOINTS,FSAVAIL,FSUSED,MAJ:MIN"


class Nothing(msgspec.Struct, forbid_unknown_fields=True):
    """No parameters."""


class FormatParams(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    filesystem: Filesystem = "ext4"
    label: Label | None = None


class MountParams(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    mount_point: MountPoint
    #: Absent: what the device holds (mount finds it).
    filesystem: Filesystem | None = None
    options: Options | None = None


class UnmountParams(msgspec.Struct, forbid_unknown_fields=True):
    device: Device
    #: Absent: the device's one mount point under the mount root.
    mount_point: MountPoint | None = None


KIND = Kind(
    "storage",
    "storage",
    (
        Operation("disks", Nothing, mutates=False, summary="disks with their partitions"),
        # No undo: what was on the device is gone (a rollback reports it irreversible).
        Operation("format", FormatParams, summary="make a filesystem on a device"),
        Operation("mount", MountParams, undo="unmount", summary="mount a filesystem"),
        Operation("unmount", UnmountParams, undo="mount", summary="unmount a filesystem"),
    ),
    key="device",
    summary="the host's disks, filesystems and mounts",
)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    #: Glob patterns of the devices format may touch (matched on the resolved path).
    allowed_devices: tuple[str, ...] = ()
    mount_root: Path = Path("/mnt")

    @classmethod
    def of(cls, table: object) -> StorageConfig:
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ProviderConfigError("storage must be a table")
        unknown = sorted(set(table) - {"allowed_devices", "mount_root"})
        if unknown:
            raise ProviderConfigError(f"storage: unknown settings {unknown}")
        allowed = table.get("allowed_devices", [])
        if not isinstance(allowed, list) or not all(
            isinstance(p, str) and p.startswith("/dev/") for p in allowed
        ):
            raise ProviderConfigError("storage.allowed_devices: a list of /dev/… glob patterns")
        root = table.get("mount_root", "/mnt")
        if not isinstance(root, str) or not root.startswith("/") or root == "/":
            raise ProviderConfigError("storage.mount_root: an absolute directory other than /")
        return cls(tuple(allowed), Path(os.path.realpath(root)))


# -- reading ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Mount:
    device: str  # major:minor
    mount_point: str
    fstype: str
    options: str


def mounts(mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Mount]:
    """The mount table (in this process's mount namespace)."""
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        point = _unescape(fields[4])
        found.append(Mount(fields[2], point, fields[separator + 1], fields[5]))
    return found


def _unescape(path: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), path)


def swaps() -> set[str]:
    try:
        lines = Path("/proc/swaps").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {os.path.realpath(line.split()[0]) for line in lines if line.strip()}


async def run(*argv: str, patience: float = 300) -> str:
    """A tool's standard output; its standard error in the error when it fails (after
    `patience` seconds: a retryable error)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL": "C"},
    )
    try:
        async with asyncio.timeout(patience):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise ProviderError(f"{argv[0]}: no answer within {patience} s") from None
    if process.returncode != 0:
        message = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
        raise PermanentProviderError(f"{argv[0]}: {message}")
    return out.decode(errors="replace")


async def probe(path: str) -> dict[str, str]:
    """`blkid -p`: TYPE, LABEL, … of what the device holds ({} when nothing)."""
    try:
        out = await run("blkid", "-p", "-o", "export", path, patience=30)
    except PermanentProviderError:
        return {}  # nothing recognised (exit status 2), or not readable
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def disks() -> list[JSON]:
    """Disks with their partitions, in seed 000's shape."""
    out = await run("lsblk", "--json", "--bytes", "--tree", "-o", LSBLK_COLUMNS)
    devices = json.loads(out).get("blockdevices", [])
    return [await _disk(device) for device in devices]


async def _disk(device: JSON) -> JSON:
    kind = device.get("type") or "disk"
    disk = {
        "name": device.get("name"),
        "path": device.get("path"),
        "size": int(device.get("size") or 0),
        "model": (device.get("model") or "").strip() or None,
        "type": ("hdd" if device.get("rota") else "ssd") if kind == "disk" else kind,
        **await _filesystem(device),
        "partitions": [
            {
                "name": child.get("name"),
                "path": child.get("path"),
                "size": int(child.get("size") or 0),
                "type": child.get("type"),
                **await _filesystem(child),
            }
            for child in _descendants(device)
        ],
    }
    return disk


def _descendants(device: JSON) -> Iterator[JSON]:
    for child in device.get("children") or []:
        yield child
        yield from _descendants(child)


async def _filesystem(device: JSON) -> JSON:
    points = [p for p in device.get("mountpoints") or [] if p]
    fstype, label = device.get("fstype"), device.get("label")
    if not fstype and device.get("path") and int(device.get("size") or 0) > 0:
        probed = await probe(str(device["path"]))
        fstype, label = probed.get("TYPE"), label or probed.get("LABEL")
    return {
        "filesystem": fstype,
        "label": label,
        "mount_point": points[0] if points else None,
        "mount_points": points,
        "used": None if device.get("fsused") is None else int(device["fsused"]),
        "available": None if device.get("fsavail") is None else int(device["fsavail"]),
    }


# -- safety -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockDevice:
    path: str  # resolved
    name: str  # sysfs name (loop3, sda1)
    number: str  # major:minor


def block_device(path: str, field: str = "device") -> BlockDevice:
    """The block device a path names (symbolic links resolved); `InvalidParams` else."""
    if ".." in path.split("/"):
        raise InvalidParams(field, f"{path}: `..` is not allowed")
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError:
        raise InvalidParams(field, f"{path} does not exist") from None
    if not stat.S_ISBLK(st.st_mode):
        raise InvalidParams(field, f"{path} is not a block device")
    number = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    name = Path(os.path.realpath(f"/sys/dev/block/{number}")).name
    return BlockDevice(real, name, number)


def _family(device: BlockDevice) -> list[tuple[str, str]]:
    """The device and its partitions: (sysfs name, major:minor)."""
    found = [(device.name, device.number)]
    sys = Path("/sys/class/block") / device.name
    for entry in sorted(sys.iterdir()) if sys.is_dir() else []:
        dev = entry / "dev"
        if (entry / "partition").exists() and dev.exists():
            found.append((entry.name, dev.read_text().strip()))
    return found


def format_refusal(device: BlockDevice, config: StorageConfig) -> str | None:
    """Why formatting the device is refused (None: it may be formatted)."""
    if not config.allowed_devices:
        return (
            "formatting is off: no device is allowed (configure the host instance's "
            "storage.allowed_devices)"
        )
    if not any(fnmatch.fnmatchcase(device.path, pattern) for pattern in config.allowed_devices):
        return (
            f"{device.path} is not among the devices allowed to be formatted "
            f"({', '.join(config.allowed_devices)})"
        )
    family = _family(device)
    numbers = {number: name for name, number in family}
    table = mounts()
    for mount in table:
        if mount.device in numbers:
            what = "the root filesystem" if mount.mount_point == "/" else mount.mount_point
            if mount.mount_point in SYSTEM_MOUNTS:
                return f"{device.path} holds {what}, a system filesystem"
            return f"{device.path} is mounted ({numbers[mount.device]} at {mount.mount_point})"
    for name, _ in family:
        holders = Path("/sys/class/block") / name / "holders"
        if holders.is_dir() and any(holders.iterdir()):
            users = ", ".join(sorted(h.name for h in holders.iterdir()))
            return f"{device.path} is in use by {users}"
    swap = swaps()
    for name, _ in family:
        if f"/dev/{name}" in swap:
            return f"{device.path} is used as swap"
    return None


def under_root(mount_point: str, config: StorageConfig, field: str = "mount_point") -> Path:
    """The mount point, resolved, if it lies under the mount root; `InvalidParams` else."""
    if ".." in mount_point.split("/"):
        raise InvalidParams(field, f"{mount_point}: `..` is not allowed")
    resolved = Path(os.path.realpath(mount_point))
    if resolved == config.mount_root or config.mount_root not in resolved.parents:
        raise InvalidParams(field, f"{mount_point} is not under the mount root {config.mount_root}")
    return resolved


def mount_options(options: str | None) -> list[str]:
    """The caller's options (from the safe list) with `nosuid,nodev` added."""
    asked = [o for o in (options or "").split(",") if o]
    unsafe = [o for o in asked if o not in SAFE_OPTIONS]
    if unsafe:
        raise InvalidParams(
            "options",
            f"not allowed: {', '.join(unsafe)} (allowed: {', '.join(sorted(SAFE_OPTIONS))})",
        )
    return list(dict.fromkeys([*asked, "nosuid", "nodev"]))


def check_label(params: FormatParams) -> None:
    if params.label is not None and len(params.label) > LABEL_LENGTH[params.filesystem]:
        raise InvalidParams(
            "label", f"at most {LABEL_LENGTH[params.filesystem]} characters on {params.filesystem}"
        )


def mounted_at(device: BlockDevice, under: Path) -> list[Mount]:
    return [
        m for m in mounts() if m.device == device.number and under in Path(m.mount_point).parents
    ]


def mkfs_command(params: FormatParams, device: str) -> Sequence[str]:
    label = params.label
    if params.filesystem == "vfat":
        return ["mkfs.vfat", *(["-n", label] if label else []), device]
    force = "-f" if params.filesystem in ("xfs", "btrfs") else "-F"
    return [f"mkfs.{params.filesystem}", force, *(["-L", label] if label else []), device]


def require_mount(device: BlockDevice, mount_point: Path) -> Mount:
    for mount in mounts():
        if mount.device == device.number and Path(mount.mount_point) == mount_point:
            return mount
    raise ResourceNotFound(f"{device.path} is not mounted at {mount_point}")
