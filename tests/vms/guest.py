"""The test guest: a Debian kernel booting a busybox initramfs made here, from the
packages `./dev test` installs (linux-image-amd64, busybox-static).

`/init` loads the power button's modules and runs busybox's `acpid`, so an ACPI
power-off (a graceful stop) powers the guest off; it prints `GUEST-READY` on the serial
console once acpid holds the button's event device (a press before that is lost), then
runs a shell there (a command typed into the console is echoed back).
"""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

READY = b"GUEST-READY"
BUSYBOX = Path("/bin/busybox")

_INIT = b"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /var/run /var/log /etc/acpi/PWRF
insmod /lib/evdev.ko
insmod /lib/button.ko
printf '#!/bin/sh\\npoweroff -f\\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
until ls /dev/input/event* >/dev/null 2>&1; do sleep 0.1; done
acpid
until ls -l /proc/*/fd 2>/dev/null | grep -q /dev/input/event; do sleep 0.1; done
echo GUEST-READY
exec setsid cttyhack sh
"""


def missing() -> str | None:
    """What the guest needs that this host lacks, or None."""
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (./dev test installs it)"
    if _kernel() is None:
        return "no kernel in /boot (./dev test installs linux-image-amd64)"
    if not BUSYBOX.is_file() or b"ld-linux" in BUSYBOX.read_bytes()[:8192]:
        return "no static busybox (./dev test installs busybox-static)"
    return None


def require() -> None:
    why = missing()
    if why is not None:
        pytest.skip(why)


def _kernel() -> Path | None:
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    return kernels[-1] if kernels else None


def make_image(images: Path, name: str = "busybox") -> Path:
    """`<images>/<name>/` with `vmlinuz`, `initrd` and `cmdline`: an image the `qemu`
    provider boots directly."""
    kernel = _kernel()
    assert kernel is not None
    version = kernel.name.removeprefix("vmlinuz-")
    modules = Path("/lib/modules") / version / "kernel" / "drivers"
    image = images / name
    image.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel, image / "vmlinuz")
    (image / "initrd").write_bytes(
        _cpio(
            [
                ("bin", None),
                ("dev", None),
                ("proc", None),
                ("sys", None),
                ("etc", None),
                ("lib", None),
                ("bin/busybox", BUSYBOX.read_bytes()),
                ("lib/evdev.ko", (modules / "input" / "evdev.ko").read_bytes()),
                ("lib/button.ko", (modules / "acpi" / "button.ko").read_bytes()),
                ("init", _INIT),
            ]
        )
    )
    (image / "cmdline").write_text("console=ttyS0 quiet panic=-1\n")
    return image


def _cpio(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A `newc` cpio archive (what the kernel unpacks as its initramfs): directories
    for `None`, executable files otherwise."""
    out = bytearray()
    for inode, (name, data) in enumerate([*entries, ("TRAILER!!!", b"")], start=1):
        trailer = name == "TRAILER!!!"
        mode = 0 if trailer else (stat.S_IFDIR | 0o755 if data is None else stat.S_IFREG | 0o755)
        body = data or b""
        encoded = name.encode() + b"\0"
        fields = (inode, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(encoded), 0)
        out += b"070701" + "".join(f"{v:08x}" for v in fields).encode() + encoded
        out += b"\0" * (-len(out) % 4)
        out += body + b"\0" * (-len(body) % 4)
    out += b"\0" * (-len(out) % 512)
    return bytes(out)


def running_pids(vm_dir: Path) -> dict[str, int]:
    """The VMs under `vm_dir` whose QEMU process is alive, with its pid."""
    from providers.qemu._machine import Machine

    found = {}
    if vm_dir.is_dir():
        for root in vm_dir.iterdir():
            running = Machine(root).running()
            if running is not None:
                found[root.name] = running.pid
    return found


def kill_all(vm_dir: Path) -> None:
    """Kill every QEMU a test left under `vm_dir` (teardown, even after a failure)."""
    from providers.qemu._machine import Machine
    from providers.qemu._process import kill

    if vm_dir.is_dir():
        for root in vm_dir.iterdir():
            running = Machine(root).running()
            if running is not None:
                kill(running.pid, running.ticks)
