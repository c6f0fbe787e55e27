"""The base images a VM's `os` names, in the instance's image directory.

An image is either a disk, `<name>.qcow2` (or `.img`, `.raw`), which a VM's disk
overlays (copy on write: the base is never written), or a directory `<name>/` holding
any of `disk.qcow2`, a kernel `vmlinuz` with an `initrd` and a `cmdline` file (booted
directly, as the tests' busybox guest is). `none` is a blank disk.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

NONE = "none"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DISK_SUFFIXES = {".qcow2": "qcow2", ".img": "raw", ".raw": "raw"}


@dataclass(frozen=True, slots=True)
class Image:
    name: str
    disk: Path | None = None
    #: qcow2 or raw.
    disk_format: str = "qcow2"
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str = ""


class Images:
    def __init__(self, root: Path | None, qemu_img: str) -> None:
        self.root = root
        self.qemu_img = qemu_img
        self._sizes: dict[tuple[Path, float], int] = {}

    def all(self) -> dict[str, Image]:
        """Every image, by name (`none` included)."""
        found = {NONE: Image(NONE)}
        if self.root is None or not self.root.is_dir():
            return found
        for entry in sorted(self.root.iterdir()):
            if entry.is_file() and entry.suffix in _DISK_SUFFIXES and _NAME.match(entry.stem):
                found.setdefault(entry.stem, Image(entry.stem, entry, _DISK_SUFFIXES[entry.suffix]))
            elif entry.is_dir() and _NAME.match(entry.name):
                image = _directory_image(entry)
                if image is not None:
                    found.setdefault(entry.name, image)
        return found

    def find(self, name: str) -> Image | None:
        return self.all().get(name)

    def virtual_size(self, image: Image) -> int:
        """The base disk's size in bytes (what an overlay must at least have); 0 without."""
        if image.disk is None:
            return 0
        key = (image.disk, image.disk.stat().st_mtime)
        if key not in self._sizes:
            info = subprocess.run(
                [self.qemu_img, "info", "--output=json", "-f", image.disk_format, str(image.disk)],
                capture_output=True,
                check=True,
                timeout=30,
            )
            self._sizes[key] = int(json.loads(info.stdout)["virtual-size"])
        return self._sizes[key]


def _directory_image(path: Path) -> Image | None:
    disk = path / "disk.qcow2"
    kernel, initrd, cmdline = path / "vmlinuz", path / "initrd", path / "cmdline"
    if not disk.is_file() and not kernel.is_file():
        return None
    return Image(
        path.name,
        disk=disk if disk.is_file() else None,
        kernel=kernel if kernel.is_file() else None,
        initrd=initrd if initrd.is_file() else None,
        cmdline=cmdline.read_text().strip() if cmdline.is_file() else "",
    )
