"""An instance's settings (`[providers.<name>]` with `type = "qemu"`)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import psutil

from providers.base import ProviderConfigError


def _host_memory_mb() -> int:
    return int(psutil.virtual_memory().total // (1024 * 1024))


class QemuConfig(msgspec.Struct, forbid_unknown_fields=True):
    #: Where each VM's directory is made: `<vm_dir>/<id>/` (the default configuration
    #: says `{data_dir}/vms`).
    vm_dir: str
    #: The base images `os` names (`docs/vms.md`); none configured: only `none`.
    images: str = ""
    binary: str = "qemu-system-x86_64"
    qemu_img: str = "qemu-img"
    #: `tcg` (emulation: slow, works everywhere), `kvm`, or a fallback list `kvm:tcg`.
    #: TCG is the default: KVM hangs guests on some hosts (nested, busy).
    accel: str = "tcg"
    machine: str = "q35"
    #: Seconds between the ACPI power-off of a stop and the hard stop.
    stop_grace: float = 30.0
    #: Seconds QEMU may take to come up (its monitor answering).
    start_timeout: float = 60.0
    #: The largest VM this host takes (422 past them): vCPUs, MiB, GiB.
    max_cpu: int = msgspec.field(default_factory=lambda: os.cpu_count() or 1)
    max_memory: int = msgspec.field(default_factory=_host_memory_mb)
    max_disk: int = 1024
    #: `none`: no network device. `user`: QEMU's user-mode network, restricted (no way
    #: out of the guest), with the guest's SSH port forwarded to a loopback port.
    network: Literal["none", "user"] = "none"
    #: QEMU's seccomp sandbox (`-sandbox on,obsolete=deny,resourcecontrol=deny`). Not
    #: `spawn=deny` nor `elevateprivileges=deny`: `-daemonize` forks and calls setsid.
    sandbox: bool = True


def parse_config(config: Mapping[str, Any]) -> QemuConfig:
    try:
        parsed = msgspec.convert(dict(config), QemuConfig)
    except msgspec.ValidationError as exc:
        raise ProviderConfigError(str(exc)) from None
    for accel in parsed.accel.split(":"):
        if accel not in ("tcg", "kvm"):
            raise ProviderConfigError(f"accel: {accel!r} is not tcg or kvm")
    for key in ("max_cpu", "max_memory", "max_disk"):
        if getattr(parsed, key) < 1:
            raise ProviderConfigError(f"{key} must be at least 1")
    if parsed.stop_grace < 0 or parsed.start_timeout <= 0:
        raise ProviderConfigError("stop_grace must be >= 0 and start_timeout > 0")
    if not Path(parsed.vm_dir).is_absolute():
        raise ProviderConfigError("vm_dir must be an absolute path")
    return parsed


def missing_hypervisor(config: QemuConfig) -> str | None:
    """Why VMs cannot run here (what is not installed), or None."""
    missing = [b for b in (config.binary, config.qemu_img) if shutil.which(b) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian: qemu-system-x86 qemu-utils)"
    return None


def accelerator(config: QemuConfig) -> str | None:
    """The first of `accel` usable here (kvm needs /dev/kvm), or None."""
    for accel in config.accel.split(":"):
        if accel == "tcg" or os.access("/dev/kvm", os.R_OK | os.W_OK):
            return accel
    return None
