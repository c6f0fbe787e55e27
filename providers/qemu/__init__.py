"""Virtual machines on QEMU: the `qemu` provider type.

Each VM is a directory (`<vm_dir>/<id>/`: its definition, its qcow2 disk, its sockets)
and, while it runs, a QEMU process in a session of its own, driven over QMP with the
QEMU project's `qemu.qmp` library. VMs outlive the orchestrator; a restarted one finds
them again from their directory (pid, start time, QMP). See docs/vms.md.
"""

from providers.qemu._provider import QemuProvider

__all__ = ["QemuProvider"]
